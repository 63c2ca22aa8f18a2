/* SPDX-License-Identifier: MIT */
/*
 * privmem's software TDX module: the SEAMCALL ABI Linux 7.3's KVM and TDX host code issue,
 * answered in software so that KVM's real TDX code runs on a machine without TDX or VMX (the
 * lab, under QEMU TCG). The module is simulated: it is not Intel's module, it runs no SEAM
 * transition and no guest instruction stream (docs/tdx-lab.md says what that leaves out).
 *
 * One source, two homes: the lab kernel (soft.c wraps it) and privmem's host tests and
 * differential fuzz target (harness/build.rs compiles it), which hold every status and every
 * S-EPT state it produces to privmem's model (harness/src/model/sept/). The core touches
 * memory only through struct seam_env, so both homes give it their own idea of "physical".
 */
#ifndef PRIVMEM_SEAM_H
#define PRIVMEM_SEAM_H

#ifdef __KERNEL__
#include <linux/types.h>
#else
#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
typedef uint64_t u64;
typedef uint32_t u32;
typedef uint16_t u16;
typedef uint8_t u8;
#endif

/* Laid out as Linux's struct tdx_module_args: every register a SEAMCALL reads or writes. */
struct seam_regs {
	u64 rcx, rdx, r8, r9, r10, r11, r12, r13, r14, r15, rbx, rdi, rsi;
};

struct seam_env {
	void *ctx;
	/* The 4K page at physical address pa (page aligned), or NULL if pa is not memory. */
	void *(*page)(void *ctx, u64 pa);
	/* The calling logical processor (for LP.INIT and vCPU association). */
	u32 (*cpu)(void *ctx);
	/* Optional: a private page's owner changed (to the TD: owned=true) -- the kernel
	 * unmaps it from the direct map while a TD owns it. */
	void (*owned)(void *ctx, u64 pa, bool owned);
	/* Optional: the guest runs for up to `us` microseconds with the module's lock dropped, so
	 * that other logical processors' SEAMCALLs meet a vCPU inside the TD. Returns true if an
	 * interrupt for this logical processor is pending (the TD exits, as on hardware). */
	bool (*guest_runs)(void *ctx, u32 us);
};

/* Leaves (RAX bits 15:0); the version in bits 23:16 is ignored except where noted. */
enum seam_leaf {
	SEAM_VP_ENTER = 0, SEAM_MNG_ADDCX = 1, SEAM_MEM_PAGE_ADD = 2, SEAM_MEM_SEPT_ADD = 3,
	SEAM_VP_ADDCX = 4, SEAM_MEM_PAGE_RELOCATE = 5, SEAM_MEM_PAGE_AUG = 6,
	SEAM_MEM_RANGE_BLOCK = 7, SEAM_MNG_KEY_CONFIG = 8, SEAM_MNG_CREATE = 9,
	SEAM_VP_CREATE = 10, SEAM_MNG_RD = 11, SEAM_MEM_PAGE_DEMOTE = 15, SEAM_MR_EXTEND = 16, SEAM_MR_FINALIZE = 17,
	SEAM_VP_FLUSH = 18, SEAM_MNG_VPFLUSHDONE = 19, SEAM_MNG_KEY_FREEID = 20,
	SEAM_MNG_INIT = 21, SEAM_VP_INIT = 22, SEAM_MEM_PAGE_PROMOTE = 23,
	SEAM_PHYMEM_PAGE_RDMD = 24, SEAM_VP_RD = 26, SEAM_PHYMEM_PAGE_RECLAIM = 28,
	SEAM_MEM_PAGE_REMOVE = 29, SEAM_SYS_KEY_CONFIG = 31, SEAM_SYS_INIT = 33,
	SEAM_SYS_RD = 34, SEAM_SYS_LP_INIT = 35, SEAM_SYS_TDMR_INIT = 36, SEAM_MEM_TRACK = 38,
	SEAM_MEM_RANGE_UNBLOCK = 39, SEAM_PHYMEM_CACHE_WB = 40, SEAM_PHYMEM_PAGE_WBINVD = 41,
	SEAM_VP_WR = 43, SEAM_SYS_CONFIG = 45, SEAM_SYS_SHUTDOWN = 52, SEAM_SYS_UPDATE = 53,
	SEAM_SYS_DISABLE = 69,
	SEAM_NR_LEAVES = 70,
};

/* Status codes (the module's ABI; the low 32 bits carry an operand id where noted). */
#define SEAM_SUCCESS				0x0000000000000000ULL
#define SEAM_NON_RECOVERABLE_TD			0x6000000200000000ULL
#define SEAM_INTERRUPTED_RESUMABLE		0x8000000300000000ULL
#define SEAM_INTERRUPTED_RESTARTABLE		0x8000000400000000ULL
#define SEAM_OPERAND_INVALID			0xC000010000000000ULL
#define SEAM_OPERAND_ADDR_RANGE_ERROR		0xC000010100000000ULL
#define SEAM_OPERAND_BUSY			0x8000020000000000ULL
#define SEAM_PREVIOUS_TLB_EPOCH_BUSY		0x8000020100000000ULL
#define SEAM_OPERAND_BUSY_HOST_PRIORITY		0x8000020400000000ULL
#define SEAM_SYS_BUSY				0x8000020200000000ULL
#define SEAM_PAGE_METADATA_INCORRECT		0xC000030000000000ULL
#define SEAM_PAGE_NOT_OWNED_BY_TD		0xC000030200000000ULL
#define SEAM_TD_ASSOCIATED_PAGES_EXIST		0xC000040000000000ULL
#define SEAM_SYS_INIT_NOT_PENDING		0xC000050000000000ULL
#define SEAM_SYS_LP_INIT_NOT_DONE		0xC000050200000000ULL
#define SEAM_SYS_LP_INIT_DONE			0xC000050300000000ULL
#define SEAM_SYS_NOT_READY			0xC000050500000000ULL
#define SEAM_SYS_KEY_CONFIG_NOT_PENDING		0xC000050700000000ULL
#define SEAM_SYS_STATE_INCORRECT		0xC000050800000000ULL
#define SEAM_SYS_CONFIG_NOT_PENDING		0xC000050C00000000ULL
#define SEAM_TDCS_NOT_ALLOCATED			0xC000060600000000ULL
#define SEAM_LIFECYCLE_STATE_INCORRECT		0xC000060700000000ULL
#define SEAM_OP_STATE_INCORRECT			0xC000060800000000ULL
#define SEAM_NO_VCPUS				0xC000060900000000ULL
#define SEAM_TDCX_NUM_INCORRECT			0xC000061000000000ULL
#define SEAM_VCPU_STATE_INCORRECT		0xC000070000000000ULL
#define SEAM_VCPU_ASSOCIATED			0x8000070100000000ULL
#define SEAM_VCPU_NOT_ASSOCIATED		0x8000070200000000ULL
#define SEAM_MAX_VCPUS_EXCEEDED			0xC000070500000000ULL
#define SEAM_TD_KEYS_NOT_CONFIGURED		0x8000081000000000ULL
#define SEAM_KEY_STATE_INCORRECT		0xC000081100000000ULL
#define SEAM_KEY_CONFIGURED			0x0000081500000000ULL
#define SEAM_NO_HKID_READY_TO_WBCACHE		0x0000082100000000ULL
#define SEAM_FLUSHVP_NOT_DONE			0x8000082400000000ULL
#define SEAM_INVALID_TDMR			0xC0000A0000000000ULL
#define SEAM_TDMR_ALREADY_INITIALIZED		0x00000A0300000000ULL
#define SEAM_EPT_WALK_FAILED			0xC0000B0000000000ULL
#define SEAM_EPT_ENTRY_NOT_PRESENT		0xC0000B0300000000ULL
#define SEAM_GPA_RANGE_NOT_BLOCKED		0xC0000B0600000000ULL
#define SEAM_GPA_RANGE_ALREADY_BLOCKED		0x00000B0700000000ULL
#define SEAM_TLB_TRACKING_NOT_DONE		0xC0000B0800000000ULL
#define SEAM_EPT_INVALID_PROMOTE_CONDITIONS	0xC0000B0900000000ULL
#define SEAM_PAGE_ALREADY_ACCEPTED		0x00000B0A00000000ULL
#define SEAM_PAGE_SIZE_MISMATCH			0xC0000B0B00000000ULL
#define SEAM_EPT_ENTRY_STATE_INCORRECT		0xC0000B0D00000000ULL
#define SEAM_METADATA_FIELD_ID_INCORRECT	0xC0000C0000000000ULL
#define SEAM_METADATA_FIELD_NOT_WRITABLE	0xC0000C0100000000ULL
#define SEAM_METADATA_FIELD_NOT_READABLE	0xC0000C0200000000ULL
/* What a SEAMCALL returns on a CPU without SEAM: the module is off (seam_disable). */
#define SEAM_SEAMCALL_VMFAILINVALID		0x8000FF00FFFF0000ULL

/* Operand ids. */
#define SEAM_OP_RCX	1ULL
#define SEAM_OP_RDX	2ULL
#define SEAM_OP_R8	8ULL
#define SEAM_OP_R9	9ULL
#define SEAM_OP_TDR	128ULL
#define SEAM_OP_TDCX	129ULL
#define SEAM_OP_TDVPR	130ULL
#define SEAM_OP_TDCS	0x90ULL
#define SEAM_OP_SEPT	0x92ULL
#define SEAM_OP_TD_EPOCH 0xa9ULL

/* S-EPT entry states: the values the module reports and privmem's model uses. */
enum seam_sept_state {
	SEAM_FREE = 0, SEAM_BLOCKED = 1, SEAM_PENDING = 2, SEAM_PENDING_BLOCKED = 3,
	SEAM_MAPPED = 4, SEAM_NL_BLOCKED = 0x81, SEAM_NL_MAPPED = 0x84,
};

/* PAMT page types (what PHYMEM.PAGE.RDMD reports in RCX). */
enum seam_page_type {
	SEAM_PT_NDA = 0, SEAM_PT_RSVD = 1, SEAM_PT_REG = 3, SEAM_PT_TDR = 4, SEAM_PT_TDCX = 5,
	SEAM_PT_TDVPR = 6, SEAM_PT_EPT = 8,
};

/* The module's own sizes, reported through SYS.RD. */
#define SEAM_MAX_TDMRS		64
#define SEAM_MAX_RSVD_PER_TDMR	16
#define SEAM_PAMT_ENTRY_SIZE	16
#define SEAM_TDCS_PAGES		4	/* the last one is the S-EPT root */
#define SEAM_TDVPS_PAGES	3	/* TDVPR plus two TDCX */
#define SEAM_MAX_VCPUS		64
#define SEAM_NR_KEYIDS		1024

/* Switches: the huge-page interface for a kernel carrying the series -- 2M AUG, ACCEPT at 2M
 * (its level in the EPT-violation exit), TDH.MEM.PAGE.DEMOTE and PROMOTE -- and, with it, the
 * TDX_FEATURES0 bit ENHANCED_DEMOTE_INTERRUPTIBILITY (51): DEMOTE is then never interrupted
 * (a TD without L2 VMs, as every TD here), the module the huge-page series v3 and later
 * require. Without it an injected interruption gives DEMOTE's INTERRUPTED_RESTARTABLE. */
#define SEAM_F_HUGE_PAGES	(1u << 0)
#define SEAM_F_ENHANCED_DEMOTE	(1u << 1)
#define SEAM_FEATURES0_ENHANCED_DEMOTE (1ULL << 51)
/* TD attribute SEPT_VE_DISABLE: a pending-page access exits to the host instead of #VE. */
#define SEAM_ATTR_SEPT_VE_DISABLE (1ULL << 28)

struct seam_tdmr {
	u64 base, size, pamt_4k, pamt_4k_size;
};

/* Fault injection, per leaf: the next `busy` calls return OPERAND_BUSY, the next
 * `interrupted` ones the leaf's INTERRUPTED status, before they change anything. */
struct seam_inject {
	u32 busy, interrupted;
};

struct seam {
	struct seam_env env;
	u32 flags;
	u32 state;		/* enum in seam.c: off, sys-init, configured, keys, ready */
	u64 lp_done[4];		/* LP.INIT per logical processor (up to 256) */
	u32 nr_tdmrs;
	struct seam_tdmr tdmrs[SEAM_MAX_TDMRS];
	u64 tdmr_next[SEAM_MAX_TDMRS];
	u16 global_keyid;
	u8 hkid[SEAM_NR_KEYIDS];	/* per HKID: free, assigned, configured, reclaimed */
	u64 calls[SEAM_NR_LEAVES];
	struct seam_inject inject[SEAM_NR_LEAVES];
	/* The next `sept_busy` S-EPT leaves (SEPT.ADD, PAGE.ADD/AUG, BLOCK, TRACK, REMOVE),
	 * whichever comes: privmem's `inject seamcall-busy`. */
	u32 sept_busy;
	/* S-EPT entry writes, any TD: each TD keeps the count at its last one (seam_sept_gen()). */
	u64 sept_writes;
	/* How long a vCPU's guest runs on after its batch (and inside an ACCEPT) with the lock
	 * dropped, in microseconds; 0: VP.ENTER runs under the lock throughout (privmem sets it
	 * for its concurrent groups, `run_on` in debugfs). */
	u32 run_on_us;
	/* What concurrency gave (debugfs `contention`): host S-EPT SEAMCALLs that found a vCPU
	 * inside the TD; OPERAND_BUSY on an entry a guest ACCEPT held; guest ACCEPTs that yielded
	 * to the host's priority; TRACKs refused with PREVIOUS_TLB_EPOCH_BUSY; REMOVE/DEMOTE/
	 * PROMOTE refused because a vCPU inside entered before the blocking epoch ended; VP.ENTERs
	 * ended by an interrupt. */
	u64 met_inside, entry_busy, host_priority, epoch_busy, untracked_inside, interrupted_runs;
};

void seam_init(struct seam *m, const struct seam_env *env, u32 flags);
/* One SEAMCALL: RAX in, status out; registers as the ABI says. */
u64 seam_call(struct seam *m, u64 rax, struct seam_regs *r);
/* The state of the S-EPT entry at `level` (0 4K, 1 2M, 2 1G) for `gpa` of the TD whose TDR
 * is at tdr_pa; *pa gets the entry's page (leaf) or table (non-leaf). For the differential
 * target and the lab's after-step comparison. Returns -1 if the walk does not reach it. */
int seam_sept_state(struct seam *m, u64 tdr_pa, u64 gpa, int level, u64 *pa);
/* Every present S-EPT entry at 1G and below of a TD, leaves and non-leaves, in GPA order. */
/* The module's S-EPT write count at the TD's last S-EPT write: unchanged, its dump is
 * unchanged (unique across TDs, as the count only grows). */
u64 seam_sept_gen(struct seam *m, u64 tdr_pa);
void seam_sept_leaves(struct seam *m, u64 tdr_pa,
		      void (*cb)(void *ctx, u64 gpa, int level, u32 state, u64 pa), void *ctx);
/* The same, below 1G only in the `n` gigabytes `gibs` (every 1G entry is still listed): a
 * long-lived TD keeps the tables of every region it used, and a reader after one case's
 * leaves need not walk them. */
void seam_sept_window(struct seam *m, u64 tdr_pa, const u64 *gibs, int n,
		      void (*cb)(void *ctx, u64 gpa, int level, u32 state, u64 pa), void *ctx);
/* KVM's shared EPT of a TD: present leaves (kind 1) and MMIO SPTEs (kind 0), in GPA order. */
void seam_shared_ept(struct seam *m, u64 tdr_pa, void (*cb)(void *ctx, u64 gpa, int level, int kind),
		     void *ctx);
/* sizeof(struct seam), for a host that allocates it. */
unsigned long seam_size(void);
/* The guest's TDG.MEM.PAGE.ACCEPT walk, as VP.ENTER runs it for the TD shim: the guest's RAX,
 * or *exit for an EPT violation to the host. */
u64 seam_guest_accept(struct seam *m, u64 tdr_pa, u64 gpa, int level, bool *exit);
/* The PAMT's view of a page: its type, and its owner's TDR in *owner. */
int seam_page_type(struct seam *m, u64 pa, u64 *owner);
/* For privmem's host tests: set run_on_us, and read the contention counters (six, in the
 * order struct seam has them). */
void seam_set_run_on(struct seam *m, u32 us);
void seam_contention(struct seam *m, u64 out[6]);

#endif
