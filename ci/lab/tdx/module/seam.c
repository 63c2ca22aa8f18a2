// SPDX-License-Identifier: MIT
/*
 * privmem's software TDX module: the core (see seam.h). Every rule here is one privmem's model
 * (harness/src/model/sept.rs and sept/seamcalls.rs) also holds; the differential target
 * (fuzz/fuzz_targets/seam_diff.rs) and harness/tests/seam.rs hold the two to each other.
 *
 * Where the module keeps its state: where the real one does, in the pages the host donates.
 * The TDR page holds the TD, the TDVPR page the vCPU, S-EPT table pages their 512 entries, the
 * PAMT (which the host allocates and hands over in TDH.SYS.CONFIG) each page's type, owner and
 * blocking epoch. So the module needs no allocator, and a page the host touches while the
 * module owns it is a page whose contents the module depends on.
 */
#include "seam.h"

#define PAGE 4096ULL
#define PAGE_MASK_ (~(PAGE - 1))
#define PA_MASK 0x000ffffffffff000ULL

enum { ST_OFF, ST_SYS_INIT, ST_CONFIGURED, ST_KEYS, ST_READY, ST_DISABLED };
enum { KEY_FREE, KEY_ASSIGNED, KEY_CONFIGURED, KEY_RECLAIMED };
/* TD life cycle (the TDR's): keys assigned at CREATE, configured at KEY.CONFIG, blocked at
 * VPFLUSHDONE, torn down at KEY.FREEID. The op state: MNG.INIT, then FINALIZE. */
enum { LIFE_ASSIGNED = 1, LIFE_CONFIGURED, LIFE_BLOCKED, LIFE_TEARDOWN };
enum { OP_UNINIT = 0, OP_INITIALIZED, OP_RUNNABLE };

#define TDR_MAGIC 0x5244547065737650ULL	/* "PvsepTDR" */
#define TDVPR_MAGIC 0x5250564474657350ULL
#define NR_CPUID 8

struct tdr {
	u64 magic;
	u32 life, op;
	u16 hkid, nr_tdcs, max_vcpus, nr_vcpus;
	u32 levels;			/* S-EPT levels: 4 or 5 */
	u64 tdcs[SEAM_TDCS_PAGES];
	u64 children;			/* pages of any type the TD owns, TDCS excluded */
	u64 attributes, xfam, eptp, config_flags;
	u64 epoch;
	u16 refcount[2];		/* vCPUs inside the TD that entered in an even/odd epoch */
	/* Guest ACCEPTs in flight (their vCPU's guest runs with the module's lock dropped): the
	 * entry each holds (accept_key()); and entries a host SEAMCALL found held, which the host
	 * has priority on until a host leaf on it goes through (a guest ACCEPT waits). */
	u64 accepting[4];
	u64 host_wants[4];
	u64 sept_gen;			/* m->sept_writes at the TD's last S-EPT write */
	u64 shared_eptp;		/* the last SHARED_EPT_POINTER a vCPU of the TD was given */
	u64 mrtd;
	u64 tsc_offset, tsc_multiplier;
	u32 cpuid[NR_CPUID][4];		/* the TD's CPUID, configurable bits from td_params */
	u32 vcpus_associated;		/* vCPUs associated with a logical processor */
	u16 tsc_frequency;
};

/* A vCPU's script state: the TD shim's command loop (guests/src/abi.rs), interpreted. */
enum { RUN_NEXT, RUN_IO_DONE, RUN_MAP_GPA };

struct tdvpr {
	u64 magic;
	u64 tdr;
	u32 state;			/* 0 created, 1 initialized */
	u32 nr_tdcx;
	u64 tdcx[SEAM_TDVPS_PAGES - 1];
	u32 index;
	u32 assoc_cpu;			/* ~0: not associated */
	u64 x2apic;
	u64 entered_epoch;
	u64 initial_rcx;
	/* VMCS fields KVM writes (VP.WR) and state it reads (VP.RD). */
	u64 shared_eptp, pi_nv, pi_desc, pinbased, secondary, notify_window, pend_nmi;
	u64 booted;			/* the shim ran its start-up (TDG.VP.INFO) */
	u64 cmd;			/* next command */
	u32 run;			/* what the last exit waits for */
	u32 inside;			/* in TDH.VP.ENTER (its guest may run with the lock let go) */
	u32 hp_waits;			/* this ACCEPT's waits for the host's priority */
	u32 pad;
};

/* ---- PAMT -------------------------------------------------------------------------------- */

struct pamt {
	u64 w;		/* type | level << 8 | owner_pfn << 16 */
	u64 bepoch;	/* the TD epoch at which the entry this page backs was blocked */
};

static struct pamt *pamt_of(struct seam *m, u64 pa)
{
	u32 i;

	for (i = 0; i < m->nr_tdmrs; i++) {
		struct seam_tdmr *t = &m->tdmrs[i];
		u64 off, at;
		u8 *p;

		if (pa < t->base || pa >= t->base + t->size)
			continue;
		off = ((pa - t->base) / PAGE) * sizeof(struct pamt);
		at = t->pamt_4k + off;
		p = m->env.page(m->env.ctx, at & PAGE_MASK_);
		return p ? (struct pamt *)(p + (at & (PAGE - 1))) : NULL;
	}
	return NULL;
}

static u32 pt_type(struct pamt *p) { return p->w & 0xff; }
static u64 pt_owner(struct pamt *p) { return (p->w >> 16) << 12; }

static void pt_set(struct seam *m, struct pamt *p, u64 pa, u32 type, u64 owner)
{
	bool was = pt_type(p) == SEAM_PT_REG || pt_type(p) == SEAM_PT_EPT;
	bool now = type == SEAM_PT_REG || type == SEAM_PT_EPT;

	p->w = type | ((owner >> 12) << 16);
	p->bepoch = 0;
	if (was != now && m->env.owned)
		m->env.owned(m->env.ctx, pa, now);
}

static void *page(struct seam *m, u64 pa)
{
	if (pa & (PAGE - 1))
		return NULL;
	return m->env.page(m->env.ctx, pa);
}

static void zero(void *p)
{
	u64 *q = p;
	u32 i;

	for (i = 0; i < PAGE / 8; i++)
		q[i] = 0;
}

static void copy(void *d, const void *s, u64 n)
{
	u8 *a = d;
	const u8 *b = s;

	while (n--)
		*a++ = *b++;
}

/* A page the host hands to the module: memory, inside a TDMR, free (PT_NDA). */
static u64 take(struct seam *m, u64 pa, u64 op, struct pamt **out)
{
	struct pamt *p;

	if ((pa & (PAGE - 1)) || !page(m, pa))
		return SEAM_OPERAND_INVALID | op;
	p = pamt_of(m, pa);
	if (!p)
		return SEAM_OPERAND_ADDR_RANGE_ERROR | op;
	if (pt_type(p) != SEAM_PT_NDA)
		return SEAM_PAGE_METADATA_INCORRECT | op;
	*out = p;
	return SEAM_SUCCESS;
}

/* ---- TDs and vCPUs ----------------------------------------------------------------------- */

/* A page the module made a TDR or TDVPR (both begin with their magic): the PAMT's type, then
 * the magic, each with the module's status for the operand `op`. */
static void *control_page(struct seam *m, u64 pa, u32 type, u64 magic, u64 op, u64 *err)
{
	struct pamt *p = (pa & (PAGE - 1)) ? NULL : pamt_of(m, pa);
	u64 *page_;

	if (!p || pt_type(p) != type) {
		*err = SEAM_PAGE_METADATA_INCORRECT | op;
		return NULL;
	}
	page_ = page(m, pa);
	if (!page_ || *page_ != magic) {
		*err = SEAM_OPERAND_INVALID | op;
		return NULL;
	}
	return page_;
}

static struct tdr *tdr_of(struct seam *m, u64 pa, u64 *err)
{
	return control_page(m, pa, SEAM_PT_TDR, TDR_MAGIC, SEAM_OP_TDR, err);
}

/* A TD whose keys are configured and whose TDCS is complete: what the memory leaves need. */
static struct tdr *td_usable(struct seam *m, u64 pa, u64 *err)
{
	struct tdr *td = tdr_of(m, pa, err);

	if (!td)
		return NULL;
	if (td->life != LIFE_CONFIGURED) {
		*err = td->life == LIFE_ASSIGNED ? SEAM_TD_KEYS_NOT_CONFIGURED
						 : SEAM_LIFECYCLE_STATE_INCORRECT;
		return NULL;
	}
	if (td->nr_tdcs < SEAM_TDCS_PAGES) {
		*err = SEAM_TDCS_NOT_ALLOCATED;
		return NULL;
	}
	return td;
}

static struct tdvpr *tdvpr_of(struct seam *m, u64 pa, u64 *err)
{
	return control_page(m, pa, SEAM_PT_TDVPR, TDVPR_MAGIC, SEAM_OP_TDVPR, err);
}

/* ---- The S-EPT --------------------------------------------------------------------------- */

static u64 shared_bit(struct tdr *td)
{
	return td->levels == 5 ? 1ULL << 51 : 1ULL << 47;
}

static u64 *table(struct seam *m, u64 pa) { return page(m, pa & PA_MASK); }
static u32 idx(u64 gpa, int level) { return (gpa >> (12 + 9 * level)) & 511; }
static u32 est(u64 e) { return e & 0xff; }
static bool e_leaf(u64 e) { u32 s = est(e); return s >= SEAM_BLOCKED && s <= SEAM_MAPPED; }
static bool e_blocked(u64 e)
{
	u32 s = est(e);

	return s == SEAM_BLOCKED || s == SEAM_PENDING_BLOCKED || s == SEAM_NL_BLOCKED;
}

/*
 * The entry at `level` for gpa: the walk goes through non-leaf entries only. On a
 * failed walk, *at gets the level where it stopped and the result is NULL.
 */
static u64 *walk(struct seam *m, struct tdr *td, u64 gpa, int level, int *at)
{
	u64 *t = table(m, td->tdcs[SEAM_TDCS_PAGES - 1]);
	int l;

	for (l = td->levels - 1; l > level; l--) {
		u64 e = t[idx(gpa, l)];

		/* Through any non-leaf, blocked or not (the model's parent_ok). */
		if (est(e) != SEAM_NL_MAPPED && est(e) != SEAM_NL_BLOCKED) {
			*at = l;
			return NULL;
		}
		t = table(m, e);
	}
	*at = level;
	return &t[idx(gpa, level)];
}

/* What KVM reads back on an S-EPT error: the entry in RCX, its level in RDX. */
static u64 ept_err(struct seam_regs *r, u64 status, u64 e, int level)
{
	r->rcx = e;
	r->rdx = level;
	return status;
}

/* Decode "GPA | level" (RCX of the memory leaves) and check what every one checks. */
static u64 gpa_level(struct tdr *td, u64 in, int *level, u64 *gpa, int max)
{
	*level = in & 7;
	*gpa = in & ~0xfffULL;
	if (*level > max || (*gpa & ((1ULL << (12 + 9 * *level)) - 1)) ||
	    (*gpa & shared_bit(td)) || *gpa >= 2 * shared_bit(td))
		return SEAM_OPERAND_INVALID | SEAM_OP_RCX;
	return SEAM_SUCCESS;
}

/* ---- Global leaves ----------------------------------------------------------------------- */

/* Fields of TDH.SYS.RD (class/size/id as the 7.3 kernel's tdx_global_metadata.c reads them). */
static const u32 cpuid_leaves[NR_CPUID][2] = {
	{ 0x0, ~0u }, { 0x1, ~0u }, { 0x7, 0 }, { 0xd, 0 }, { 0xd, 1 },
	{ 0x80000000, ~0u }, { 0x80000001, ~0u }, { 0x80000008, ~0u },
};
/* Which bits of each leaf the host may configure (eax, ebx, ecx, edx). */
static const u32 cpuid_config[NR_CPUID][4] = {
	{ 0, 0, 0, 0 },
	{ 0, 0, 0x00000001, 0x00000000 },
	{ 0, 0x00000200, 0, 0 },
	{ 0, 0, 0, 0 },
	{ 0, 0, 0, 0 },
	{ 0, 0, 0, 0 },
	{ 0, 0, 0, 0 },
	{ 0x00ff0000, 0, 0, 0 },	/* GPAW only; MAXPHYADDR is the platform's */
};
/* The TD's CPUID before configuration: a small Intel-like CPU (GenuineIntel). */
static const u32 cpuid_base[NR_CPUID][4] = {
	{ 0xd, 0x756e6547, 0x6c65746e, 0x49656e69 },
	{ 0x000906a0, 0x00000800, 0x80202001, 0x078bfbff },
	{ 0, 0x00000001, 0, 0 },
	{ 0x3, 0x240, 0x240, 0 },
	{ 0x1, 0, 0, 0 },
	{ 0x80000008, 0x756e6547, 0x6c65746e, 0x49656e69 },
	{ 0, 0, 0x1, 0x20100800 },
	{ 0x00003034, 0, 0, 0 },	/* 52 physical address bits, 48 linear */
};

static u64 sys_rd(struct seam *m, struct seam_regs *r)
{
	u64 f = r->rdx;
	u64 v;

	switch (f) {
	case 0x0800000100000003: v = 5; break;				/* minor */
	case 0x0800000100000004: v = 1; break;				/* major */
	case 0x0800000100000005: v = 0; break;				/* update */
	/* features0: NO_RBP_MOD (18) and TOPOLOGY_ENUM (20), which 7.3 requires; with the
	 * huge-page switch, ENHANCED_DEMOTE_INTERRUPTIBILITY if switched on too. */
	case 0x0A00000300000008:
		v = (1ULL << 18) | (1ULL << 20);
		if ((m->flags & SEAM_F_HUGE_PAGES) && (m->flags & SEAM_F_ENHANCED_DEMOTE))
			v |= SEAM_FEATURES0_ENHANCED_DEMOTE;
		break;
	case 0x9100000100000008: v = SEAM_MAX_TDMRS; break;
	case 0x9100000100000009: v = SEAM_MAX_RSVD_PER_TDMR; break;
	case 0x9100000100000010:
	case 0x9100000100000011:
	case 0x9100000100000012: v = SEAM_PAMT_ENTRY_SIZE; break;
	case 0x9800000100000000: v = PAGE; break;
	case 0x9800000100000100: v = SEAM_TDCS_PAGES * PAGE; break;
	case 0x9800000100000200: v = SEAM_TDVPS_PAGES * PAGE; break;
	case 0x1900000300000000: v = ~0ULL; break;			/* attributes fixed0 */
	case 0x1900000300000001: v = 0; break;				/* attributes fixed1 */
	case 0x1900000300000002: v = ~0ULL; break;			/* xfam fixed0 */
	case 0x1900000300000003: v = 0x3; break;			/* xfam fixed1: x87, SSE */
	case 0x9900000100000004: v = NR_CPUID; break;
	case 0x9900000100000008: v = SEAM_MAX_VCPUS; break;
	case 0x8900000100000000: v = 0; break;
	default:
		if (f >= 0x9900000300000400 && f < 0x9900000300000400 + NR_CPUID) {
			u32 i = f - 0x9900000300000400;

			v = cpuid_leaves[i][0] | (u64)cpuid_leaves[i][1] << 32;
			break;
		}
		if (f >= 0x9900000300000500 && f < 0x9900000300000500 + 2 * NR_CPUID) {
			u32 i = (f - 0x9900000300000500) / 2, j = (f - 0x9900000300000500) % 2;

			v = j ? cpuid_config[i][2] | (u64)cpuid_config[i][3] << 32
			      : cpuid_config[i][0] | (u64)cpuid_config[i][1] << 32;
			break;
		}
		return SEAM_METADATA_FIELD_ID_INCORRECT | SEAM_OP_RDX;
	}
	r->r8 = v;
	r->rdx = f;
	return SEAM_SUCCESS;
}

/* TDH.SYS.CONFIG: RCX = PA of an array of TDMR_INFO PAs, RDX = count, R8 = global KeyID. */
static u64 sys_config(struct seam *m, struct seam_regs *r)
{
	u64 *list;
	u32 i;

	if (m->state != ST_SYS_INIT)
		return SEAM_SYS_CONFIG_NOT_PENDING;
	if (!r->rdx || r->rdx > SEAM_MAX_TDMRS || (r->rcx & 511))
		return SEAM_OPERAND_INVALID | SEAM_OP_RDX;
	if (!r->r8 || r->r8 >= SEAM_NR_KEYIDS)
		return SEAM_OPERAND_INVALID | SEAM_OP_R8;
	list = page(m, r->rcx & PAGE_MASK_);
	if (!list)
		return SEAM_OPERAND_INVALID | SEAM_OP_RCX;
	list = (u64 *)((u8 *)list + (r->rcx & (PAGE - 1)));
	for (i = 0; i < r->rdx; i++) {
		u64 pa = list[i], *t;

		t = page(m, pa & PAGE_MASK_);
		if (!t || (pa & 511))
			return SEAM_INVALID_TDMR;
		t = (u64 *)((u8 *)t + (pa & (PAGE - 1)));
		/* base, size, pamt_1g base/size, pamt_2m base/size, pamt_4k base/size */
		if ((t[0] | t[1]) & ((1ULL << 30) - 1) || !t[1] ||
		    t[7] < t[1] / PAGE * SEAM_PAMT_ENTRY_SIZE)
			return SEAM_INVALID_TDMR;
		if (i && t[0] < m->tdmrs[i - 1].base + m->tdmrs[i - 1].size)
			return SEAM_INVALID_TDMR;
		m->tdmrs[i] = (struct seam_tdmr){ t[0], t[1], t[6], t[7] };
		m->tdmr_next[i] = t[0];
	}
	m->nr_tdmrs = r->rdx;
	m->global_keyid = r->r8;
	m->state = ST_CONFIGURED;
	return SEAM_SUCCESS;
}

/* TDH.SYS.TDMR.INIT: initialize a TDMR's PAMT in chunks; RDX = where the next call goes on. */
static u64 tdmr_init(struct seam *m, struct seam_regs *r)
{
	u32 i;

	if (m->state != ST_KEYS && m->state != ST_READY)
		return SEAM_SYS_STATE_INCORRECT;
	for (i = 0; i < m->nr_tdmrs; i++) {
		struct seam_tdmr *t = &m->tdmrs[i];
		u64 end = t->base + t->size, to, pa;

		if (r->rcx != t->base)
			continue;
		if (m->tdmr_next[i] >= end)
			return SEAM_TDMR_ALREADY_INITIALIZED;
		/* 1G of pages per call: the kernel loops, as it does on a real module. */
		to = m->tdmr_next[i] + (1ULL << 30);
		for (pa = t->pamt_4k; pa < t->pamt_4k + t->pamt_4k_size; pa += PAGE) {
			u64 first = t->base + (pa - t->pamt_4k) / SEAM_PAMT_ENTRY_SIZE * PAGE;
			void *p;

			if (first < m->tdmr_next[i] || first >= to)
				continue;
			p = page(m, pa);
			if (p)
				zero(p);
		}
		m->tdmr_next[i] = to > end ? end : to;
		r->rdx = m->tdmr_next[i];
		for (i = 0; i < m->nr_tdmrs; i++)
			if (m->tdmr_next[i] < m->tdmrs[i].base + m->tdmrs[i].size)
				return SEAM_SUCCESS;
		m->state = ST_READY;
		return SEAM_SUCCESS;
	}
	return SEAM_OPERAND_INVALID | SEAM_OP_RCX;
}

/* ---- TD build ---------------------------------------------------------------------------- */

static u64 mng_create(struct seam *m, struct seam_regs *r)
{
	struct pamt *p;
	struct tdr *td;
	u64 err = take(m, r->rcx, SEAM_OP_TDR, &p);
	u16 hkid = r->rdx;

	if (err)
		return err;
	if (hkid == 0 || hkid >= SEAM_NR_KEYIDS || hkid == m->global_keyid)
		return SEAM_OPERAND_INVALID | SEAM_OP_RDX;
	if (m->hkid[hkid] != KEY_FREE)
		return SEAM_OPERAND_BUSY | SEAM_OP_RDX;
	td = page(m, r->rcx);
	zero(td);
	td->magic = TDR_MAGIC;
	td->life = LIFE_ASSIGNED;
	td->hkid = hkid;
	td->epoch = 1;
	m->hkid[hkid] = KEY_ASSIGNED;
	pt_set(m, p, r->rcx, SEAM_PT_TDR, r->rcx);
	return SEAM_SUCCESS;
}

static u64 mng_key_config(struct seam *m, struct seam_regs *r)
{
	u64 err;
	struct tdr *td = tdr_of(m, r->rcx, &err);

	if (!td)
		return err;
	if (td->life == LIFE_CONFIGURED)
		return SEAM_KEY_CONFIGURED;
	if (td->life != LIFE_ASSIGNED)
		return SEAM_LIFECYCLE_STATE_INCORRECT;
	/* One call per package; the lab has one package. */
	td->life = LIFE_CONFIGURED;
	m->hkid[td->hkid] = KEY_CONFIGURED;
	return SEAM_SUCCESS;
}

static u64 mng_addcx(struct seam *m, struct seam_regs *r)
{
	struct pamt *p;
	u64 err;
	struct tdr *td = tdr_of(m, r->rdx, &err);

	if (!td)
		return err;
	if (td->life != LIFE_CONFIGURED)
		return SEAM_TD_KEYS_NOT_CONFIGURED;
	if (td->nr_tdcs >= SEAM_TDCS_PAGES)
		return SEAM_TDCX_NUM_INCORRECT | SEAM_OP_RCX;
	err = take(m, r->rcx, SEAM_OP_RCX, &p);
	if (err)
		return err;
	zero(page(m, r->rcx));
	td->tdcs[td->nr_tdcs++] = r->rcx;
	pt_set(m, p, r->rcx, SEAM_PT_TDCX, r->rdx);
	return SEAM_SUCCESS;
}

/* TD_PARAMS (1024 bytes at RDX): attributes, xfam, max_vcpus, eptp_controls, config_flags,
 * tsc_frequency, the measurement registers, then cpuid_values[] in the order of SYS.RD. */
static u64 mng_init(struct seam *m, struct seam_regs *r)
{
	u64 err;
	struct tdr *td = td_usable(m, r->rcx, &err);
	u8 *tp;
	u64 attrs, xfam, eptp, flags;
	u16 maxv;
	u32 i, j;

	if (!td)
		return err;
	if (td->op != OP_UNINIT)
		return SEAM_OP_STATE_INCORRECT;
	tp = page(m, r->rdx & PAGE_MASK_);
	if (!tp || (r->rdx & 1023))
		return SEAM_OPERAND_INVALID | SEAM_OP_RDX;
	tp += r->rdx & (PAGE - 1);
	copy(&attrs, tp, 8);
	copy(&xfam, tp + 8, 8);
	copy(&maxv, tp + 16, 2);
	copy(&eptp, tp + 24, 8);
	copy(&flags, tp + 32, 8);
	r->rcx = 0;
	/* Only SEPT_VE_DISABLE of the attributes; xfam must hold x87 and SSE. */
	if (attrs & ~SEAM_ATTR_SEPT_VE_DISABLE)
		return SEAM_OPERAND_INVALID | 64;
	if ((xfam & 3) != 3)
		return SEAM_OPERAND_INVALID | 65;
	if (!maxv || maxv > SEAM_MAX_VCPUS)
		return SEAM_OPERAND_INVALID | 68;
	/* EPTP: WB (6) and a 4-level (3) or, with MAX_GPAW, 5-level (4) walk. */
	if ((eptp & 7) != 6 || (((eptp >> 3) & 7) != 3 && ((eptp >> 3) & 7) != 4) ||
	    (((eptp >> 3) & 7) == 4) != !!(flags & 1) || eptp & ~0x3fULL)
		return SEAM_OPERAND_INVALID | 67;
	if (!(flags & 4) || flags & ~5ULL)	/* NO_RBP_MOD required; MAX_GPAW optional */
		return SEAM_OPERAND_INVALID | 66;
	td->attributes = attrs;
	td->xfam = xfam;
	td->max_vcpus = maxv;
	td->eptp = eptp;
	td->config_flags = flags;
	copy(&td->tsc_frequency, tp + 40, 2);
	td->levels = ((eptp >> 3) & 7) + 1;
	for (i = 0; i < NR_CPUID; i++) {
		u32 v[4];

		copy(v, tp + 256 + 16 * i, 16);
		for (j = 0; j < 4; j++) {
			if (v[j] & ~cpuid_config[i][j])
				return SEAM_OPERAND_INVALID | 69;
			td->cpuid[i][j] = (cpuid_base[i][j] & ~cpuid_config[i][j]) | v[j];
		}
	}
	td->op = OP_INITIALIZED;
	return SEAM_SUCCESS;
}

/* TDH.MNG.RD: the TSC fields KVM reads, and the TD's CPUID (encoded field ids). */
static u64 mng_rd(struct seam *m, struct seam_regs *r)
{
	u64 err, f = r->rdx;
	struct tdr *td = tdr_of(m, r->rcx, &err);
	u32 i;

	if (!td)
		return err;
	if (td->op == OP_UNINIT)
		return SEAM_OP_STATE_INCORRECT;
	if (f == 0x110000000000000AULL) {
		r->r8 = td->tsc_offset;
		return SEAM_SUCCESS;
	}
	if (f == 0x110000000000000BULL) {
		r->r8 = td->tsc_multiplier ? td->tsc_multiplier : 1ULL << 48;
		return SEAM_SUCCESS;
	}
	if ((f & ~0x1ffffULL) == 0x9410000300000000ULL) {
		u32 leaf = ((f >> 9) & 0x7f) | (((f >> 16) & 1) << 31);
		u32 sub = (f >> 1) & 0xff;

		for (i = 0; i < NR_CPUID; i++) {
			u32 want = cpuid_leaves[i][1] == ~0u ? 0xff : cpuid_leaves[i][1];

			if (cpuid_leaves[i][0] != leaf || want != sub)
				continue;
			r->r8 = (f & 1) ? td->cpuid[i][2] | (u64)td->cpuid[i][3] << 32
					: td->cpuid[i][0] | (u64)td->cpuid[i][1] << 32;
			return SEAM_SUCCESS;
		}
	}
	return SEAM_METADATA_FIELD_ID_INCORRECT | SEAM_OP_RDX;
}

static u64 vp_create(struct seam *m, struct seam_regs *r)
{
	struct pamt *p;
	struct tdvpr *vp;
	u64 err;
	struct tdr *td = td_usable(m, r->rdx, &err);

	if (!td)
		return err;
	if (td->op != OP_INITIALIZED)
		return SEAM_OP_STATE_INCORRECT;
	if (td->nr_vcpus >= td->max_vcpus)
		return SEAM_MAX_VCPUS_EXCEEDED;
	err = take(m, r->rcx, SEAM_OP_TDVPR, &p);
	if (err)
		return err;
	vp = page(m, r->rcx);
	zero(vp);
	vp->magic = TDVPR_MAGIC;
	vp->tdr = r->rdx;
	vp->index = td->nr_vcpus++;
	vp->assoc_cpu = ~0u;
	td->children++;
	pt_set(m, p, r->rcx, SEAM_PT_TDVPR, r->rdx);
	return SEAM_SUCCESS;
}

static u64 vp_addcx(struct seam *m, struct seam_regs *r)
{
	struct pamt *p;
	u64 err;
	struct tdvpr *vp = tdvpr_of(m, r->rdx, &err);
	struct tdr *td;

	if (!vp)
		return err;
	td = page(m, vp->tdr);
	if (vp->state || vp->nr_tdcx >= SEAM_TDVPS_PAGES - 1)
		return SEAM_VCPU_STATE_INCORRECT;
	err = take(m, r->rcx, SEAM_OP_TDCX, &p);
	if (err)
		return err;
	zero(page(m, r->rcx));
	vp->tdcx[vp->nr_tdcx++] = r->rcx;
	td->children++;
	pt_set(m, p, r->rcx, SEAM_PT_TDCX, vp->tdr);
	return SEAM_SUCCESS;
}

/* The vCPU becomes associated with the calling logical processor; another one is BUSY until
 * TDH.VP.FLUSH, as on the real module. */
static u64 associate(struct seam *m, struct tdvpr *vp, struct tdr *td)
{
	u32 cpu = m->env.cpu ? m->env.cpu(m->env.ctx) : 0;

	if (vp->assoc_cpu == ~0u) {
		vp->assoc_cpu = cpu;
		td->vcpus_associated++;
	} else if (vp->assoc_cpu != cpu) {
		return SEAM_VCPU_ASSOCIATED;
	}
	return SEAM_SUCCESS;
}

static u64 vp_init(struct seam *m, struct seam_regs *r)
{
	u64 err;
	struct tdvpr *vp = tdvpr_of(m, r->rcx, &err);
	struct tdr *td;

	if (!vp)
		return err;
	td = page(m, vp->tdr);
	if (vp->state || vp->nr_tdcx != SEAM_TDVPS_PAGES - 1)
		return SEAM_VCPU_STATE_INCORRECT;
	if (td->op != OP_INITIALIZED)
		return SEAM_OP_STATE_INCORRECT;
	err = associate(m, vp, td);
	if (err)
		return err;
	vp->initial_rcx = r->rdx;
	vp->x2apic = r->r8;
	vp->state = 1;
	return SEAM_SUCCESS;
}

/* VMCS fields (class 0) KVM writes through TDH.VP.WR; management and state fields it reads. */
static u64 *vp_field(struct tdvpr *vp, u64 f)
{
	switch (f) {
	case 0x203C: return &vp->shared_eptp;
	case 0x0002: return &vp->pi_nv;
	case 0x2016: return &vp->pi_desc;
	case 0x4000: return &vp->pinbased;
	case 0x401e: return &vp->secondary;
	case 0x4024: return &vp->notify_window;
	case 0x200000000000000BULL: return &vp->pend_nmi;
	default: return NULL;
	}
}

static u64 vp_rd_wr(struct seam *m, struct seam_regs *r, bool wr)
{
	u64 err, *f;
	struct tdvpr *vp = tdvpr_of(m, r->rcx, &err);

	if (!vp)
		return err;
	if (!vp->state)
		return SEAM_VCPU_STATE_INCORRECT;
	if (!wr && r->rdx == 0x9100000000000100ULL) {	/* STATE_DETAILS: nothing pending */
		r->r8 = 0;
		return SEAM_SUCCESS;
	}
	f = vp_field(vp, r->rdx);
	if (!f)
		return (wr ? SEAM_METADATA_FIELD_NOT_WRITABLE : SEAM_METADATA_FIELD_NOT_READABLE) |
		       SEAM_OP_RDX;
	if (wr) {
		u64 old = *f;

		*f = (old & ~r->r9) | (r->r8 & r->r9);
		r->r8 = old;
		/* KVM's vCPUs of a TD share one shared root: kept with the TD for the dump. */
		if (f == &vp->shared_eptp) {
			struct tdr *td = tdr_of(m, vp->tdr, &err);

			if (td)
				td->shared_eptp = *f;
		}
	} else {
		r->r8 = *f;
	}
	return SEAM_SUCCESS;
}

/* ---- S-EPT leaves ------------------------------------------------------------------------ */

/* An entry a guest ACCEPT holds or the host waits for: GPA | level, tagged (bit 3) so that a
 * 4K entry at GPA 0 is not an empty slot. */
static u64 accept_key(u64 gpa, int level)
{
	return (gpa & ~0xfffULL) | (level & 7) | 8;
}

static bool key_in(const u64 *keys, u64 key)
{
	int i;

	for (i = 0; i < 4; i++)
		if (keys[i] == key)
			return true;
	return false;
}

static void key_set(u64 *keys, u64 key, bool on)
{
	int i;

	for (i = 0; i < 4; i++) {
		if (on && !keys[i] && !key_in(keys, key)) {
			keys[i] = key;
			return;
		}
		if (!on && keys[i] == key)
			keys[i] = 0;
	}
}

/* A host S-EPT leaf on the entry at (gpa, level): OPERAND_BUSY if a guest ACCEPT holds it,
 * the host's priority noted until a host leaf on it goes through (the module's host-priority
 * entry lock). Counts a vCPU inside. */
static u64 host_entry_lock(struct seam *m, struct tdr *td, u64 gpa, int level)
{
	u64 key = accept_key(gpa, level);

	if (td->refcount[0] || td->refcount[1])
		m->met_inside++;
	if (key_in(td->accepting, key)) {
		key_set(td->host_wants, key, true);
		m->entry_busy++;
		return SEAM_OPERAND_BUSY | SEAM_OP_RCX;
	}
	key_set(td->host_wants, key, false);
	return SEAM_SUCCESS;
}

/* An S-EPT entry of the TD was written: what a dump reader compares (seam_sept_gen()). */
static void sept_changed(struct seam *m, struct tdr *td)
{
	td->sept_gen = ++m->sept_writes;
}

/* Whether a guest ACCEPT holds an entry inside [gpa, gpa + size) (PROMOTE's children). */
static bool range_held(struct tdr *td, u64 gpa, u64 size)
{
	int i;

	for (i = 0; i < 4; i++)
		if (td->accepting[i] && (td->accepting[i] & ~0xfffULL) - gpa < size)
			return true;
	return false;
}

static u64 sept_add(struct seam *m, struct seam_regs *r)
{
	u64 err, gpa, *e;
	struct pamt *p;
	int level, at;
	struct tdr *td = td_usable(m, r->rdx, &err);

	if (!td)
		return err;
	if (td->op == OP_UNINIT)
		return SEAM_OP_STATE_INCORRECT;
	err = gpa_level(td, r->rcx, &level, &gpa, td->levels - 1);
	if (err)
		return err;
	if (level == 0)
		return SEAM_OPERAND_INVALID | SEAM_OP_RCX;
	e = walk(m, td, gpa, level, &at);
	if (!e)
		return ept_err(r, SEAM_EPT_WALK_FAILED, 0, at);
	err = host_entry_lock(m, td, gpa, level);
	if (err)
		return err;
	if (est(*e) != SEAM_FREE)
		return ept_err(r, SEAM_EPT_ENTRY_STATE_INCORRECT | SEAM_OP_RCX, *e, level);
	err = take(m, r->r8, SEAM_OP_R8, &p);
	if (err)
		return err;
	zero(page(m, r->r8));
	*e = r->r8 | SEAM_NL_MAPPED;
	sept_changed(m, td);
	td->children++;
	pt_set(m, p, r->r8, SEAM_PT_EPT, r->rdx);
	r->rcx = *e;
	r->rdx = level;
	return SEAM_SUCCESS;
}

/* PAGE.ADD (build: copy the source, MAPPED) and PAGE.AUG (runnable: zero, PENDING). */
static u64 page_add_aug(struct seam *m, struct seam_regs *r, bool aug)
{
	u64 err, gpa, *e, pa = r->r8;
	struct pamt *p;
	int level, at;
	struct tdr *td = td_usable(m, r->rdx, &err);
	u64 n, i;

	if (!td)
		return err;
	if (td->op != (aug ? OP_RUNNABLE : OP_INITIALIZED))
		return SEAM_OP_STATE_INCORRECT;
	err = gpa_level(td, aug ? r->rcx : r->rcx & ~0xfffULL, &level, &gpa,
			aug && (m->flags & SEAM_F_HUGE_PAGES) ? 1 : 0);
	if (err)
		return err;
	e = walk(m, td, gpa, level, &at);
	if (!e)
		return ept_err(r, SEAM_EPT_WALK_FAILED, 0, at);
	err = host_entry_lock(m, td, gpa, level);
	if (err)
		return err;
	if (est(*e) != SEAM_FREE)
		return ept_err(r, SEAM_EPT_ENTRY_STATE_INCORRECT | SEAM_OP_RCX, *e, level);
	n = level ? 512 : 1;
	if (pa & ((n * PAGE) - 1))
		return SEAM_OPERAND_INVALID | SEAM_OP_R8;
	for (i = 0; i < n; i++) {
		err = take(m, pa + i * PAGE, SEAM_OP_R8, &p);
		if (err)
			return err;
	}
	if (!aug) {
		void *src = page(m, r->r9);

		if (!src)
			return SEAM_OPERAND_INVALID | SEAM_OP_R9;
		copy(page(m, pa), src, PAGE);
	}
	for (i = 0; i < n; i++) {
		if (aug)
			zero(page(m, pa + i * PAGE));
		p = pamt_of(m, pa + i * PAGE);
		pt_set(m, p, pa + i * PAGE, SEAM_PT_REG, r->rdx);
		p->w |= (u64)level << 8;
	}
	td->children += n;
	*e = pa | (aug ? SEAM_PENDING : SEAM_MAPPED);
	sept_changed(m, td);
	r->rcx = *e;
	r->rdx = level;
	return SEAM_SUCCESS;
}

/* TDH.MR.EXTEND: a 256-byte chunk of a page added at build time folds into MRTD. */
static u64 mr_extend(struct seam *m, struct seam_regs *r)
{
	u64 err, *e;
	int at;
	struct tdr *td = td_usable(m, r->rdx, &err);
	const u8 *d;
	u32 i;

	if (!td)
		return err;
	if (td->op != OP_INITIALIZED)
		return SEAM_OP_STATE_INCORRECT;
	if ((r->rcx & 255) || (r->rcx & shared_bit(td)))
		return SEAM_OPERAND_INVALID | SEAM_OP_RCX;
	e = walk(m, td, r->rcx, 0, &at);
	if (!e)
		return ept_err(r, SEAM_EPT_WALK_FAILED, 0, at);
	if (est(*e) != SEAM_MAPPED)
		return ept_err(r, SEAM_EPT_ENTRY_STATE_INCORRECT | SEAM_OP_RCX, *e, 0);
	d = (const u8 *)table(m, *e) + (r->rcx & (PAGE - 1) & ~255ULL);
	for (i = 0; i < 256; i++)
		td->mrtd = (td->mrtd ^ d[i]) * 0x100000001b3ULL;
	td->mrtd = (td->mrtd ^ r->rcx) * 0x100000001b3ULL;
	return SEAM_SUCCESS;
}

static u64 mr_finalize(struct seam *m, struct seam_regs *r)
{
	u64 err;
	struct tdr *td = td_usable(m, r->rcx, &err);

	if (!td)
		return err;
	if (td->op != OP_INITIALIZED)
		return SEAM_OP_STATE_INCORRECT;
	if (!td->nr_vcpus)
		return SEAM_NO_VCPUS;
	td->op = OP_RUNNABLE;
	return SEAM_SUCCESS;
}

/* The PAMT entry of what an S-EPT entry points to: it carries the blocking epoch. */
static struct pamt *target(struct seam *m, u64 e)
{
	return pamt_of(m, e & PA_MASK);
}

static u64 range_block(struct seam *m, struct seam_regs *r)
{
	u64 err, gpa, *e;
	int level, at;
	struct tdr *td = td_usable(m, r->rdx, &err);
	struct pamt *p;

	if (!td)
		return err;
	if (td->op == OP_UNINIT)
		return SEAM_OP_STATE_INCORRECT;
	err = gpa_level(td, r->rcx, &level, &gpa, td->levels - 2);
	if (err)
		return err;
	e = walk(m, td, gpa, level, &at);
	if (!e)
		return ept_err(r, SEAM_EPT_WALK_FAILED, 0, at);
	err = host_entry_lock(m, td, gpa, level);
	if (err)
		return err;
	if (est(*e) == SEAM_FREE)
		return ept_err(r, SEAM_EPT_ENTRY_STATE_INCORRECT | SEAM_OP_RCX, *e, level);
	if (e_blocked(*e))
		return ept_err(r, SEAM_GPA_RANGE_ALREADY_BLOCKED, *e, level);
	switch (est(*e)) {
	case SEAM_MAPPED: *e = (*e & ~0xffULL) | SEAM_BLOCKED; break;
	case SEAM_PENDING: *e = (*e & ~0xffULL) | SEAM_PENDING_BLOCKED; break;
	default: *e = (*e & ~0xffULL) | SEAM_NL_BLOCKED; break;
	}
	sept_changed(m, td);
	p = target(m, *e);
	if (p)
		p->bepoch = td->epoch;
	r->rcx = *e;
	r->rdx = level;
	return SEAM_SUCCESS;
}

/* TDH.MEM.TRACK: a new TLB epoch, once no vCPU that entered in the one before is still
 * inside (each VP.ENTER counts its vCPU in the epoch it entered, until it exits). KVM then
 * kicks every vCPU out; REMOVE, DEMOTE and PROMOTE check the blocking epoch has ended. */
static u64 mem_track(struct seam *m, struct seam_regs *r)
{
	u64 err;
	struct tdr *td = td_usable(m, r->rcx, &err);

	if (!td)
		return err;
	if (td->op != OP_RUNNABLE)
		return SEAM_OP_STATE_INCORRECT;
	if (td->refcount[0] || td->refcount[1])
		m->met_inside++;
	/* A vCPU still inside from the epoch before this one: that epoch has not ended. */
	if (td->refcount[1 - (td->epoch & 1)]) {
		m->epoch_busy++;
		return SEAM_PREVIOUS_TLB_EPOCH_BUSY;
	}
	td->epoch++;
	return SEAM_SUCCESS;
}

/* The module's is_tlb_tracked(): the entry whose page (or table) `p` backs was blocked in an
 * epoch every vCPU has left since -- two epochs back, or the last one with no vCPU still in
 * the TD from it. */
static bool tracked(struct seam *m, struct tdr *td, struct pamt *p)
{
	if (!p)
		return false;
	if (p->bepoch + 1 == td->epoch) {
		if (td->refcount[p->bepoch & 1] == 0)
			return true;
		m->untracked_inside++;
		return false;
	}
	return p->bepoch + 1 < td->epoch;
}

/* A REMOVE that fails is fatal to the TD for KVM (7.3's TDX_BUG_ON), which may then give the
 * page back to the host's allocator while the module still has it as the TD's: the host may
 * have it back in its direct map (on hardware its use is then harmless but for the
 * partial-write erratum). The PAMT is left as it is. */
static void released(struct seam *m, u64 pa, int level)
{
	u64 i, n = 1ULL << (9 * level);

	for (i = 0; m->env.owned && i < n; i++)
		m->env.owned(m->env.ctx, pa + i * PAGE, false);
}

static u64 page_remove(struct seam *m, struct seam_regs *r)
{
	u64 err, gpa, *e, pa, n, i;
	int level, at;
	struct tdr *td = td_usable(m, r->rdx, &err);
	struct pamt *p;

	if (!td)
		return err;
	if (td->op == OP_UNINIT)
		return SEAM_OP_STATE_INCORRECT;
	err = gpa_level(td, r->rcx, &level, &gpa, 2);
	if (err)
		return err;
	e = walk(m, td, gpa, level, &at);
	if (!e)
		return ept_err(r, SEAM_EPT_WALK_FAILED, 0, at);
	err = host_entry_lock(m, td, gpa, level);
	if (err)
		return err;
	if (!e_leaf(*e))
		return ept_err(r, SEAM_EPT_ENTRY_STATE_INCORRECT | SEAM_OP_RCX, *e, level);
	p = target(m, *e);
	if (td->op == OP_RUNNABLE) {
		if (!e_blocked(*e)) {
			released(m, *e & PA_MASK, level);
			return ept_err(r, SEAM_GPA_RANGE_NOT_BLOCKED, *e, level);
		}
		if (!tracked(m, td, p)) {
			released(m, *e & PA_MASK, level);
			return ept_err(r, SEAM_TLB_TRACKING_NOT_DONE, *e, level);
		}
	}
	pa = *e & PA_MASK;
	n = 1ULL << (9 * level);
	for (i = 0; i < n; i++) {
		p = pamt_of(m, pa + i * PAGE);
		if (p)
			pt_set(m, p, pa + i * PAGE, SEAM_PT_NDA, 0);
	}
	td->children -= n;
	r->rcx = *e;
	r->rdx = level;
	*e = SEAM_FREE;
	sept_changed(m, td);
	return SEAM_SUCCESS;
}

/* The PAMT's size of the `n` pages from pa: the level of the leaf that maps them. */
static void pamt_level(struct seam *m, u64 pa, u64 n, int level)
{
	u64 i;

	for (i = 0; i < n; i++) {
		struct pamt *p = pamt_of(m, pa + i * PAGE);

		if (p)
			p->w = (p->w & ~0xff00ULL) | (u64)level << 8;
	}
}

/* Blocked, and tracked since, while RUNNABLE (DEMOTE's and PROMOTE's common precondition). */
static u64 resize_tracked(struct seam *m, struct tdr *td, struct seam_regs *r, u64 *e, int level)
{
	if (td->op != OP_RUNNABLE)
		return SEAM_SUCCESS;
	if (!e_blocked(*e))
		return ept_err(r, SEAM_GPA_RANGE_NOT_BLOCKED | SEAM_OP_RCX, *e, level);
	if (!tracked(m, td, target(m, *e)))
		return ept_err(r, SEAM_TLB_TRACKING_NOT_DONE | SEAM_OP_RCX, *e, level);
	return SEAM_SUCCESS;
}

/* The entry at `level` (2M or 1G) named by RCX, walked to; NULL with *err set otherwise. */
static u64 *resize_entry(struct seam *m, struct seam_regs *r, struct tdr **tdp, int *level, u64 *err)
{
	u64 gpa, *e;
	int at;
	struct tdr *td = td_usable(m, r->rdx & ~1ULL, err);

	*tdp = td;
	if (!td)
		return NULL;
	if (td->op == OP_UNINIT) {
		*err = SEAM_OP_STATE_INCORRECT;
		return NULL;
	}
	*err = gpa_level(td, r->rcx, level, &gpa, 2);
	if (!*err && *level == 0)
		*err = SEAM_OPERAND_INVALID | SEAM_OP_RCX;
	if (*err)
		return NULL;
	e = walk(m, td, gpa, *level, &at);
	if (!e) {
		*err = ept_err(r, SEAM_EPT_WALK_FAILED | SEAM_OP_RCX, 0, at);
		return NULL;
	}
	*err = host_entry_lock(m, td, gpa, *level);
	return *err ? NULL : e;
}

/* TDH.MEM.PAGE.DEMOTE (huge-page switch): RCX = GPA | level (2M or 1G), RDX = TDR, R8 = the
 * new S-EPT page. The leaf (blocked and tracked if RUNNABLE) becomes a non-leaf over 512
 * children at the level below, each with the leaf's state unblocked and its part of the
 * pages: no UNBLOCK needed after it. */
static u64 page_demote(struct seam *m, struct seam_regs *r)
{
	u64 err, *e, *t, pa, step, i;
	struct tdr *td;
	struct pamt *p;
	int level;
	u32 s;

	if (!(m->flags & SEAM_F_HUGE_PAGES))
		return SEAM_OPERAND_INVALID;
	if (r->rdx & (PAGE - 2))
		return SEAM_OPERAND_INVALID | SEAM_OP_RDX;
	e = resize_entry(m, r, &td, &level, &err);
	if (!e)
		return err;
	if (!e_leaf(*e))
		return ept_err(r, SEAM_EPT_ENTRY_STATE_INCORRECT | SEAM_OP_RCX, *e, level);
	err = resize_tracked(m, td, r, e, level);
	if (err)
		return err;
	err = take(m, r->r8, SEAM_OP_R8, &p);
	if (err)
		return err;
	if (m->inject[SEAM_MEM_PAGE_DEMOTE].interrupted && !(m->flags & SEAM_F_ENHANCED_DEMOTE)) {
		m->inject[SEAM_MEM_PAGE_DEMOTE].interrupted--;
		return SEAM_INTERRUPTED_RESTARTABLE;
	}
	s = est(*e);
	s = s == SEAM_BLOCKED ? SEAM_MAPPED : s == SEAM_PENDING_BLOCKED ? SEAM_PENDING : s;
	pa = *e & PA_MASK;
	step = 1ULL << (9 * (level - 1));
	t = page(m, r->r8);
	zero(t);
	for (i = 0; i < 512; i++)
		t[i] = (pa + i * step * PAGE) | s;
	pamt_level(m, pa, 512 * step, level - 1);
	pt_set(m, p, r->r8, SEAM_PT_EPT, r->rdx & ~1ULL);
	td->children++;
	*e = r->r8 | SEAM_NL_MAPPED;
	sept_changed(m, td);
	r->rcx = 0;
	r->rdx = 0;
	return SEAM_SUCCESS;
}

/* TDH.MEM.PAGE.PROMOTE (huge-page switch): RCX = GPA | level, RDX = TDR. The non-leaf
 * (blocked and tracked if RUNNABLE) over 512 leaves, all MAPPED or all PENDING, contiguous
 * from a page aligned to the level, becomes one leaf; RCX gives the S-EPT page back. */
static u64 page_promote(struct seam *m, struct seam_regs *r)
{
	u64 err, *e, *t, pa, step, i, sept;
	struct tdr *td;
	int level;
	u32 s;

	if (!(m->flags & SEAM_F_HUGE_PAGES))
		return SEAM_OPERAND_INVALID;
	e = resize_entry(m, r, &td, &level, &err);
	if (!e)
		return err;
	if (est(*e) != SEAM_NL_MAPPED && est(*e) != SEAM_NL_BLOCKED)
		return ept_err(r, SEAM_EPT_ENTRY_STATE_INCORRECT | SEAM_OP_RCX, *e, level);
	err = resize_tracked(m, td, r, e, level);
	if (err)
		return err;
	step = 1ULL << (9 * (level - 1));
	if (range_held(td, r->rcx & ~0xfffULL, 512 * step * PAGE)) {
		m->entry_busy++;
		return SEAM_OPERAND_BUSY | SEAM_OP_RCX;
	}
	t = table(m, *e);
	s = est(t[0]);
	pa = t[0] & PA_MASK;
	if ((s != SEAM_MAPPED && s != SEAM_PENDING) || (pa & ((512 * step * PAGE) - 1)))
		return ept_err(r, SEAM_EPT_INVALID_PROMOTE_CONDITIONS | SEAM_OP_RCX, *e, level);
	for (i = 1; i < 512; i++)
		if (t[i] != ((pa + i * step * PAGE) | s))
			return ept_err(r, SEAM_EPT_INVALID_PROMOTE_CONDITIONS | SEAM_OP_RCX, *e, level);
	sept = *e & PA_MASK;
	pamt_level(m, pa, 512 * step, level);
	pt_set(m, pamt_of(m, sept), sept, SEAM_PT_NDA, 0);
	td->children--;
	*e = pa | s;
	sept_changed(m, td);
	r->rcx = sept;
	r->rdx = 0;
	return SEAM_SUCCESS;
}

/* ---- Teardown ---------------------------------------------------------------------------- */

static u64 vp_flush(struct seam *m, struct seam_regs *r)
{
	u64 err;
	struct tdvpr *vp = tdvpr_of(m, r->rcx, &err);
	struct tdr *td;
	u32 cpu = m->env.cpu ? m->env.cpu(m->env.ctx) : 0;

	if (!vp)
		return err;
	td = page(m, vp->tdr);
	if (vp->assoc_cpu == ~0u)
		return SEAM_VCPU_NOT_ASSOCIATED;
	if (vp->assoc_cpu != cpu)
		return SEAM_VCPU_ASSOCIATED;
	vp->assoc_cpu = ~0u;
	td->vcpus_associated--;
	return SEAM_SUCCESS;
}

static u64 vpflushdone(struct seam *m, struct seam_regs *r)
{
	u64 err;
	struct tdr *td = tdr_of(m, r->rcx, &err);

	if (!td)
		return err;
	if (td->life != LIFE_CONFIGURED && td->life != LIFE_ASSIGNED)
		return SEAM_LIFECYCLE_STATE_INCORRECT;
	if (td->vcpus_associated)
		return SEAM_FLUSHVP_NOT_DONE;
	td->life = LIFE_BLOCKED;
	return SEAM_SUCCESS;
}

static u64 key_freeid(struct seam *m, struct seam_regs *r)
{
	u64 err;
	struct tdr *td = tdr_of(m, r->rcx, &err);

	if (!td)
		return err;
	if (td->life != LIFE_BLOCKED)
		return SEAM_LIFECYCLE_STATE_INCORRECT;
	td->life = LIFE_TEARDOWN;
	m->hkid[td->hkid] = KEY_FREE;
	return SEAM_SUCCESS;
}

/* TDH.PHYMEM.PAGE.RECLAIM: a TD's page back to the host, only once the TD is torn down (or
 * never got keys); the TDR last, when it owns nothing else. */
static u64 page_reclaim(struct seam *m, struct seam_regs *r)
{
	struct pamt *p = (r->rcx & (PAGE - 1)) ? NULL : pamt_of(m, r->rcx);
	u64 owner, err;
	struct tdr *td;
	u32 type;

	if (!p)
		return SEAM_OPERAND_INVALID | SEAM_OP_RCX;
	type = pt_type(p);
	if (type == SEAM_PT_NDA || type == SEAM_PT_RSVD)
		return SEAM_PAGE_METADATA_INCORRECT | SEAM_OP_RCX;
	owner = pt_owner(p);
	td = tdr_of(m, owner, &err);
	if (!td)
		return err;
	if (td->life != LIFE_TEARDOWN && td->op != OP_UNINIT)
		return SEAM_LIFECYCLE_STATE_INCORRECT;
	if (type == SEAM_PT_TDR) {
		if (td->children)
			return SEAM_TD_ASSOCIATED_PAGES_EXIST;
		td->magic = 0;
		if (td->life == LIFE_ASSIGNED || td->life == LIFE_CONFIGURED)
			m->hkid[td->hkid] = KEY_FREE;
	} else {
		u32 i;
		bool tdcs = false;

		for (i = 0; i < td->nr_tdcs; i++)
			tdcs |= td->tdcs[i] == r->rcx;
		if (!tdcs)
			td->children--;
	}
	pt_set(m, p, r->rcx, SEAM_PT_NDA, 0);
	r->r8 = 0;	/* page size: 4K */
	r->rdx = owner;
	r->rcx = type;
	return SEAM_SUCCESS;
}

/* ---- TDH.VP.ENTER: the TD shim's command loop -------------------------------------------- */

#define HARNESS_GPA	0x1fc0000000ULL
#define CMD_OFF		0x100000ULL
#define CMD_STRIDE	0x2000ULL
#define CMD_FIRST	64
#define CMD_SIZE	32
#define RES_SIZE	16
#define SHARED_VA	0xffff800000000000ULL
#define PORT_DONE	0xe0
enum { C_READ = 1, C_WRITE = 2, C_TOUCH = 3, C_SPIN = 4, C_ACCEPT = 6, C_MAP_GPA = 7 };
#define ST_DONE 1
#define ST_EXC 2
#define ST_BAD_OP 0xbad

#define IDENTITY_LIMIT	(128ULL << 30)
#define EXIT_TRIPLE_FAULT 2
#define EXIT_IO 30
#define EXIT_EPT_VIOLATION 48
#define EXIT_TDCALL 77

/* A shared GPA through KVM's real EPT (the SHARED_EPT_POINTER KVM wrote): the page, or NULL
 * when an entry on the way is not present (or not writable for a write). *ve: that entry is
 * not present with SUPPRESS_VE (bit 63) clear -- KVM's MMIO SPTE for a TD -- so the CPU gives
 * the guest #VE instead of exiting to the host. */
static u8 *shared_page(struct seam *m, struct tdvpr *vp, u64 gpa, bool write, bool *ve)
{
	u64 *t = page(m, vp->shared_eptp & PA_MASK);
	int l;

	*ve = false;
	if (!t)
		return NULL;
	for (l = 3; l >= 0; l--) {
		u64 e = t[idx(gpa, l)];

		if (!(e & 7) && !(e >> 63)) {
			*ve = true;
			return NULL;
		}
		if (!(e & 1) || (write && !(e & 2)))
			return NULL;
		if (l == 0 || (e & 0x80)) {
			u64 mask = (1ULL << (12 + 9 * l)) - 1;
			u64 pa = ((e & PA_MASK) & ~mask) | (gpa & mask);

			return page(m, pa & PAGE_MASK_);
		}
		t = page(m, e & PA_MASK);
		if (!t)
			return NULL;
	}
	return NULL;
}

static u64 exit_ept(struct seam_regs *r, u64 gpa, u64 qual, u64 ext)
{
	r->rcx = qual;
	r->rdx = ext;
	r->r8 = gpa;
	r->r9 = 0;
	return EXIT_EPT_VIOLATION;
}

/* TDG.MEM.PAGE.ACCEPT's walk (the model's Td::accept). Returns the guest's RAX, or ~0 with
 * *exit set for an EPT violation carrying the ACCEPT level. */
static u64 accept(struct seam *m, struct tdr *td, u64 gpa, int level, bool *exit)
{
	u64 *t = table(m, td->tdcs[SEAM_TDCS_PAGES - 1]);
	int l;

	*exit = false;
	if (level > 1)
		return SEAM_OPERAND_INVALID | SEAM_OP_RCX;
	if (gpa & ((1ULL << (12 + 9 * level)) - 1))
		return SEAM_OPERAND_INVALID | SEAM_OP_RCX;
	for (l = td->levels - 1; l >= level; l--) {
		u64 *e = &t[idx(gpa, l)];
		u32 s = est(*e);

		if (l == level) {
			if (s == SEAM_PENDING) {
				u64 n = level ? 512 : 1, i;

				for (i = 0; i < n; i++)
					zero(page(m, (*e & PA_MASK) + i * PAGE));
				*e = (*e & ~0xffULL) | SEAM_MAPPED;
				sept_changed(m, td);
				return SEAM_SUCCESS;
			}
			if (s == SEAM_MAPPED)
				return SEAM_PAGE_ALREADY_ACCEPTED | l;
			if (s == SEAM_NL_MAPPED || s == SEAM_NL_BLOCKED)
				return SEAM_PAGE_SIZE_MISMATCH | l;
			*exit = true;
			return ~0ULL;
		}
		if (l <= 2 && s == SEAM_MAPPED)
			return SEAM_PAGE_ALREADY_ACCEPTED | l;
		if (s != SEAM_NL_MAPPED) {
			*exit = true;
			return ~0ULL;
		}
		t = table(m, *e);
	}
	*exit = true;
	return ~0ULL;
}

/* The leaf covering a private GPA (4K, 2M or 1G), and its level; NULL if the walk finds none. */
static u64 *private_leaf(struct seam *m, struct tdr *td, u64 gpa, int *level)
{
	u64 *t = table(m, td->tdcs[SEAM_TDCS_PAGES - 1]);
	int l;

	if (gpa >= shared_bit(td))
		return NULL;
	for (l = td->levels - 1; l >= 0; l--) {
		u64 *e = &t[idx(gpa, l)];

		if (e_leaf(*e) && l <= 2) {
			*level = l;
			return e;
		}
		if (est(*e) != SEAM_NL_MAPPED)
			return NULL;
		t = table(m, *e);
	}
	return NULL;
}

static void result(u8 *res, u64 i, u64 status, u64 value)
{
	u64 *r = (u64 *)(res + i * RES_SIZE);

	r[0] = status;
	r[1] = value;
}

/* The TD's run ends for a host interrupt. On hardware that is an EXTERNAL_INTERRUPT exit with
 * the vector acknowledged (KVM dispatches it from the exit's interrupt information); software
 * cannot acknowledge an interrupt (the APIC's INTA is the CPU's), so the run ends with the exit
 * KVM re-enters after without reading a vector, OTHER_SMI, and the interrupt, still pending,
 * is taken as soon as the host turns interrupts on: what KVM does after the exit is the same. */
static u64 exit_other_smi(struct seam_regs *r)
{
	r->rcx = 0;
	r->r9 = 0;
	return 6;	/* OTHER_SMI */
}

static u64 exit_interrupt(struct seam *m, struct seam_regs *r)
{
	m->interrupted_runs++;
	return exit_other_smi(r);
}

/* The shim's command page and the result page after it, reached through KVM's shared EPT:
 * 0, or the EPT-violation exit for the one that is not there. */
static u64 shim_pages(struct seam *m, struct tdvpr *vp, u64 cmdgpa, u8 **cmd, u8 **res,
		      struct seam_regs *r)
{
	bool fault;

	*cmd = shared_page(m, vp, cmdgpa, false, &fault);
	if (!*cmd)
		return exit_ept(r, cmdgpa, 1, 0);
	*res = shared_page(m, vp, cmdgpa + PAGE, true, &fault);
	if (!*res)
		return exit_ept(r, cmdgpa + PAGE, 2, 0);
	return 0;
}

/* A guest ACCEPT in flight holds its entry: a free slot for it, or -1 (then no window). */
static int accept_claim(struct tdr *td, u64 key)
{
	int i;

	for (i = 0; i < 4; i++) {
		if (!td->accepting[i]) {
			td->accepting[i] = key;
			return i;
		}
	}
	return -1;
}

/* Whether the guest's ACCEPT of (gpa, level) would find a PENDING entry to accept: only then
 * does it take its time (zeroing the page) and so hold the entry. */
static bool accept_pending(struct seam *m, struct tdr *td, u64 gpa, int level)
{
	u64 *e;
	int at;

	if (level > 1 || (gpa & ((1ULL << (12 + 9 * level)) - 1)))
		return false;
	e = walk(m, td, gpa, level, &at);
	return e && est(*e) == SEAM_PENDING;
}

/* How often an ACCEPT waits for the host's priority before it goes ahead anyway (the real
 * module exits to the host with HOST_PRIORITY_BUSY_TIMEOUT after its timeout). */
#define HP_WAITS 16

/* How long an ACCEPT holds its entry with the lock dropped: an eighth of the run-on time (at
 * privmem's 2 ms, 250 us: a 2M ACCEPT's zeroing under TCG takes that long). */
#define ACCEPT_US(m) ((m)->run_on_us / 8)

static u64 vp_run(struct seam *m, struct tdvpr *vp, struct tdr *td, struct seam_regs *r);

static u64 vp_enter(struct seam *m, struct seam_regs *r)
{
	u64 err, ret, epoch;
	struct tdvpr *vp = tdvpr_of(m, r->rcx, &err);
	struct tdr *td;

	if (!vp)
		return err;
	td = page(m, vp->tdr);
	if (td->life != LIFE_CONFIGURED)
		return SEAM_LIFECYCLE_STATE_INCORRECT;
	if (td->op != OP_RUNNABLE)
		return SEAM_OP_STATE_INCORRECT;
	if (!vp->state)
		return SEAM_VCPU_STATE_INCORRECT;
	/* Its guest is running on another logical processor (the TDVPS lock). */
	if (vp->inside)
		return SEAM_OPERAND_BUSY | SEAM_OP_TDVPR;
	err = associate(m, vp, td);
	if (err)
		return err;
	/* The module's adjust_tlb_tracking_state(): the vCPU counts in the epoch it entered until
	 * it exits (td_vmexit_to_vmm()). */
	epoch = td->epoch;
	vp->entered_epoch = epoch;
	td->refcount[epoch & 1]++;
	vp->inside = 1;
	ret = vp_run(m, vp, td, r);
	vp->inside = 0;
	td->refcount[epoch & 1]--;
	return ret;
}

/* The guest's run: the shim's commands from where the last exit left them. With run_on_us set
 * (privmem's concurrent groups), the guest runs with the module's lock dropped between
 * commands, inside each ACCEPT and after its batch, and an interrupt ends the run. */
static u64 vp_run(struct seam *m, struct tdvpr *vp, struct tdr *td, struct seam_regs *r)
{
	u64 cmdgpa, count, stop;
	u8 *cmd, *res;
	bool fault;
	bool runs = m->run_on_us && m->env.guest_runs;

	cmdgpa = (HARNESS_GPA + CMD_OFF + vp->index * CMD_STRIDE) | shared_bit(td);
	stop = shim_pages(m, vp, cmdgpa, &cmd, &res, r);
	if (stop)
		return stop;
	/* What the last exit waited for. After MapGPA, R10 is KVM's TDVMCALL status (RETRY: 1,
	 * R11 the next GPA); the shim reports the status as the command's value. */
	if (vp->run == RUN_MAP_GPA)
		result(res, vp->cmd++, ST_DONE, r->r10);
	vp->run = RUN_NEXT;
	count = *(u64 *)cmd;
	while (vp->cmd < count && vp->cmd < 120) {
		u64 *c;
		u64 op, va, value, gpa;
		bool shared;
		u8 *p;

		/* Between two commands the guest runs: other SEAMCALLs may come in, and KVM's
		 * shared EPT may change under the command page, so it is walked to again. */
		if (runs) {
			if (m->env.guest_runs(m->env.ctx, 0))
				return exit_interrupt(m, r);
			stop = shim_pages(m, vp, cmdgpa, &cmd, &res, r);
			if (stop)
				return stop;
		}
		c = (u64 *)(cmd + CMD_FIRST + vp->cmd * CMD_SIZE);
		op = c[0];
		va = c[1];
		value = c[2];
		shared = (va & SHARED_VA) == SHARED_VA;
		gpa = shared ? ((va & ~SHARED_VA) | shared_bit(td)) : va;

		/* The shim's page tables map [0, 128G) and its shared alias: anything else faults
		 * in the guest, which has no handler for it (a triple fault; KVM: shutdown). */
		if ((op == C_READ || op == C_WRITE || op == C_TOUCH) && (va & ~SHARED_VA) >= IDENTITY_LIMIT) {
			r->rcx = 0;
			r->r9 = 0;
			return EXIT_TRIPLE_FAULT;
		}

		switch (op) {
		case C_READ:
		case C_TOUCH:
		case C_WRITE: {
			bool write = op == C_WRITE;

			if (shared) {
				p = shared_page(m, vp, gpa & PAGE_MASK_, write, &fault);
				if (!p && fault) {
					/* #VE: the shim's handler reports the GPA. */
					result(res, vp->cmd++, ST_EXC, gpa);
					continue;
				}
				if (!p)
					return exit_ept(r, gpa & PAGE_MASK_, write ? 2 : 1, 0);
			} else {
				int level;
				u64 *e = private_leaf(m, td, gpa, &level);
				u32 s = e ? est(*e) : SEAM_FREE;

				if (s == SEAM_PENDING) {
					if (td->attributes & SEAM_ATTR_SEPT_VE_DISABLE)
						/* KVM reads type 6 without permission bits as an access
						 * before ACCEPT and kills the TD. */
						return exit_ept(r, gpa & PAGE_MASK_, write ? 2 : 1, 6);
					/* #VE: the shim's handler reports the GPA. */
					result(res, vp->cmd++, ST_EXC, gpa);
					continue;
				}
				if (s != SEAM_MAPPED)
					return exit_ept(r, gpa & PAGE_MASK_, write ? 2 : 1, 0);
				p = page(m, (*e & PA_MASK) +
					    (gpa & ((1ULL << (12 + 9 * level)) - 1) & PAGE_MASK_));
			}
			if (!p)
				return exit_ept(r, gpa & PAGE_MASK_, write ? 2 : 1, 0);
			if (write) {
				copy(p + (gpa & 0xff8), &value, 8);
				result(res, vp->cmd++, ST_DONE, 0);
			} else {
				u64 v;

				copy(&v, p + (gpa & 0xff8), 8);
				result(res, vp->cmd++, ST_DONE, v);
			}
			break;
		}
		case C_ACCEPT: {
			bool exit = false;
			u64 rax, key = accept_key(gpa, value & 7);
			int slot = -1;

			/* TDG.MEM.PAGE.ACCEPT of a PENDING entry holds it while it zeroes the page: a
			 * host SEAMCALL on it meanwhile gets OPERAND_BUSY and priority; the guest then
			 * lets go (BUSY_HOST_PRIORITY) and waits until a host leaf on the entry has
			 * gone through, exiting when an interrupt (KVM's kick) comes. */
			if (runs && !(gpa & shared_bit(td)) && accept_pending(m, td, gpa & ~0xfffULL, value & 7)) {
				if (key_in(td->host_wants, key) && vp->hp_waits < HP_WAITS) {
					vp->hp_waits++;
					m->host_priority++;
					if (m->env.guest_runs(m->env.ctx, 0))
						return exit_interrupt(m, r);
					continue;
				}
				key_set(td->host_wants, key, false);
				vp->hp_waits = 0;
				slot = accept_claim(td, key);
			}
			if (slot >= 0) {
				bool irq = m->env.guest_runs(m->env.ctx, ACCEPT_US(m));

				td->accepting[slot] = 0;
				if (key_in(td->host_wants, key)) {
					m->host_priority++;
					if (irq || m->env.guest_runs(m->env.ctx, 0))
						return exit_interrupt(m, r);
					continue;
				}
				stop = shim_pages(m, vp, cmdgpa, &cmd, &res, r);
				if (stop)
					return stop;
			}
			rax = gpa & shared_bit(td) ? SEAM_OPERAND_INVALID | SEAM_OP_RCX :
			      accept(m, td, gpa & ~0xfffULL, value & 7, &exit);

			if (exit)
				return exit_ept(r, gpa & ~0xfffULL, 2, 1 | (value & 7) << 32);
			result(res, vp->cmd++, ST_DONE, rax);
			break;
		}
		case C_MAP_GPA:
			/* TDG.VP.VMCALL<MapGPA>: the guest's R10..R13 out, KVM's answer in. */
			vp->run = RUN_MAP_GPA;
			r->rcx = 0x3c00;
			r->r10 = 0;
			r->r11 = 0x10001;
			r->r12 = va;
			r->r13 = value;
			return EXIT_TDCALL;
		case C_SPIN:
			/* A guest that never ends its batch: exit as a timer would (not counted: no
			 * interrupt ended it). */
			return exit_other_smi(r);
		default:
			result(res, vp->cmd++, ST_BAD_OP, 0);
		}
	}
	/* The batch is done; the guest runs on for a while (its next batch is not written yet)
	 * unless an interrupt ends it. Then: index back to 0, TDG.VP.VMCALL<Instruction.IO> out
	 * to the done port. */
	if (runs && m->env.guest_runs(m->env.ctx, m->run_on_us))
		m->interrupted_runs++;
	vp->cmd = 0;
	vp->run = RUN_IO_DONE;
	r->rcx = 0xfc00;
	r->r10 = 0;
	r->r11 = EXIT_IO;
	r->r12 = 1;
	r->r13 = 1;
	r->r14 = PORT_DONE;
	r->r15 = 0;
	return EXIT_TDCALL;
}

/* ---- Dispatch ---------------------------------------------------------------------------- */

void seam_init(struct seam *m, const struct seam_env *env, u32 flags)
{
	u8 *b = (u8 *)m;
	u64 i;

	for (i = 0; i < sizeof(*m); i++)
		b[i] = 0;
	m->env = *env;
	m->flags = flags;
}

static bool is_sept_leaf(u32 leaf)
{
	return leaf == SEAM_MEM_SEPT_ADD || leaf == SEAM_MEM_PAGE_ADD || leaf == SEAM_MEM_PAGE_AUG ||
	       leaf == SEAM_MEM_RANGE_BLOCK || leaf == SEAM_MEM_TRACK || leaf == SEAM_MEM_PAGE_REMOVE ||
	       leaf == SEAM_MEM_PAGE_DEMOTE || leaf == SEAM_MEM_PAGE_PROMOTE;
}

static u64 interrupted_status(u32 leaf)
{
	return leaf == SEAM_PHYMEM_CACHE_WB || leaf == SEAM_SYS_DISABLE ?
		SEAM_INTERRUPTED_RESUMABLE : SEAM_INTERRUPTED_RESTARTABLE;
}

u64 seam_call(struct seam *m, u64 rax, struct seam_regs *r)
{
	u32 leaf = rax & 0xffff;
	u32 cpu = m->env.cpu ? m->env.cpu(m->env.ctx) : 0;

	if (m->state == ST_DISABLED || leaf >= SEAM_NR_LEAVES)
		return leaf >= SEAM_NR_LEAVES ? SEAM_OPERAND_INVALID : SEAM_SEAMCALL_VMFAILINVALID;
	m->calls[leaf]++;
	if (m->sept_busy && is_sept_leaf(leaf)) {
		m->sept_busy--;
		return SEAM_OPERAND_BUSY | SEAM_OP_SEPT;
	}
	if (m->inject[leaf].busy) {
		m->inject[leaf].busy--;
		return SEAM_OPERAND_BUSY;
	}
	/* DEMOTE's interruption point is its own, late (and gone with ENHANCED_DEMOTE). */
	if (m->inject[leaf].interrupted && leaf != SEAM_MEM_PAGE_DEMOTE) {
		m->inject[leaf].interrupted--;
		return interrupted_status(leaf);
	}
	/* Before SYS.INIT and LP.INIT only those two; before TDMR.INIT is complete only the
	 * global set-up leaves. */
	if (leaf == SEAM_SYS_INIT) {
		if (m->state != ST_OFF)
			return SEAM_SYS_INIT_NOT_PENDING;
		m->state = ST_SYS_INIT;
		return SEAM_SUCCESS;
	}
	if (m->state == ST_OFF)
		return SEAM_SYS_NOT_READY;
	if (leaf == SEAM_SYS_LP_INIT) {
		if (cpu < 256 && (m->lp_done[cpu / 64] >> (cpu % 64)) & 1)
			return SEAM_SYS_LP_INIT_DONE;
		if (cpu < 256)
			m->lp_done[cpu / 64] |= 1ULL << (cpu % 64);
		return SEAM_SUCCESS;
	}
	if (cpu < 256 && !((m->lp_done[cpu / 64] >> (cpu % 64)) & 1))
		return SEAM_SYS_LP_INIT_NOT_DONE;
	switch (leaf) {
	case SEAM_SYS_RD: return sys_rd(m, r);
	case SEAM_SYS_CONFIG: return sys_config(m, r);
	case SEAM_SYS_KEY_CONFIG:
		if (m->state != ST_CONFIGURED)
			return SEAM_SYS_KEY_CONFIG_NOT_PENDING;
		m->state = ST_KEYS;
		return SEAM_SUCCESS;
	case SEAM_SYS_TDMR_INIT: return tdmr_init(m, r);
	case SEAM_SYS_DISABLE:
		m->state = ST_DISABLED;
		return SEAM_SUCCESS;
	case SEAM_SYS_SHUTDOWN:
	case SEAM_SYS_UPDATE:
		return SEAM_OPERAND_INVALID;	/* no module update in the lab */
	case SEAM_PHYMEM_PAGE_RDMD: {
		struct pamt *p = pamt_of(m, r->rcx & PAGE_MASK_);

		r->rcx = p ? pt_type(p) : SEAM_PT_NDA;
		return SEAM_SUCCESS;
	}
	}
	if (m->state != ST_READY)
		return SEAM_SYS_NOT_READY;
	switch (leaf) {
	case SEAM_VP_ENTER: return vp_enter(m, r);
	case SEAM_MNG_ADDCX: return mng_addcx(m, r);
	case SEAM_MEM_PAGE_ADD: return page_add_aug(m, r, false);
	case SEAM_MEM_SEPT_ADD: return sept_add(m, r);
	case SEAM_VP_ADDCX: return vp_addcx(m, r);
	case SEAM_MEM_PAGE_AUG: return page_add_aug(m, r, true);
	case SEAM_MEM_RANGE_BLOCK: return range_block(m, r);
	case SEAM_MNG_KEY_CONFIG: return mng_key_config(m, r);
	case SEAM_MNG_CREATE: return mng_create(m, r);
	case SEAM_VP_CREATE: return vp_create(m, r);
	case SEAM_MNG_RD: return mng_rd(m, r);
	case SEAM_MR_EXTEND: return mr_extend(m, r);
	case SEAM_MR_FINALIZE: return mr_finalize(m, r);
	case SEAM_VP_FLUSH: return vp_flush(m, r);
	case SEAM_MNG_VPFLUSHDONE: return vpflushdone(m, r);
	case SEAM_MNG_KEY_FREEID: return key_freeid(m, r);
	case SEAM_MNG_INIT: return mng_init(m, r);
	case SEAM_VP_INIT: return vp_init(m, r);
	case SEAM_VP_RD: return vp_rd_wr(m, r, false);
	case SEAM_VP_WR: return vp_rd_wr(m, r, true);
	case SEAM_PHYMEM_PAGE_RECLAIM: return page_reclaim(m, r);
	case SEAM_MEM_PAGE_REMOVE: return page_remove(m, r);
	case SEAM_MEM_TRACK: return mem_track(m, r);
	case SEAM_MEM_PAGE_DEMOTE: return page_demote(m, r);
	case SEAM_MEM_PAGE_PROMOTE: return page_promote(m, r);
	case SEAM_PHYMEM_CACHE_WB: return SEAM_SUCCESS;
	case SEAM_PHYMEM_PAGE_WBINVD: return SEAM_SUCCESS;
	default: return SEAM_OPERAND_INVALID;
	}
}

int seam_sept_state(struct seam *m, u64 tdr_pa, u64 gpa, int level, u64 *pa)
{
	u64 err, *e;
	int at;
	struct tdr *td = tdr_of(m, tdr_pa, &err);

	if (!td || td->nr_tdcs < SEAM_TDCS_PAGES || !td->levels)
		return -1;
	e = walk(m, td, gpa, level, &at);
	if (!e)
		return -1;
	if (pa)
		*pa = *e & PA_MASK;
	return est(*e);
}

/* Depth first over a tree of 512-entry tables from `root` at level `top`: `visit` sees every
 * entry with its GPA (rebuilt from the indices on the way) and returns the table to descend
 * into, or NULL. */
static void walk_tree(struct seam *m, u64 *root, int top,
		      u64 *(*visit)(struct seam *m, u64 e, int l, u64 gpa, void *ctx), void *ctx)
{
	u64 *t[5];
	u32 i[5];
	int l = top;

	if (!root)
		return;
	t[top] = root;
	i[top] = 0;
	while (l <= top) {
		u64 gpa = 0, *child;
		int k;

		if (i[l] == 512) {
			l++;
			if (l <= top)
				i[l]++;
			continue;
		}
		for (k = top; k >= l; k--)
			gpa |= (u64)i[k] << (12 + 9 * k);
		child = visit(m, t[l][i[l]], l, gpa, ctx);
		if (child && l > 0) {
			t[l - 1] = child;
			i[l - 1] = 0;
			l--;
		} else {
			i[l]++;
		}
	}
}

struct sept_walk {
	void (*cb)(void *ctx, u64 gpa, int level, u32 state, u64 pa);
	void *ctx;
	const u64 *gibs;	/* the gigabytes to descend into (all where n is 0) */
	int n;
};

static bool in_window(struct sept_walk *w, u64 gib)
{
	int i;

	for (i = 0; i < w->n; i++)
		if (w->gibs[i] == gib)
			return true;
	return !w->n;
}

/* Present S-EPT entries: leaves, and non-leaves at 1G and below, then into the tables. */
static u64 *sept_visit(struct seam *m, u64 e, int l, u64 gpa, void *p)
{
	struct sept_walk *w = p;

	if (est(e) == SEAM_FREE)
		return NULL;
	if (e_leaf(e) || l == 0) {
		w->cb(w->ctx, gpa, l, est(e), e & PA_MASK);
		return NULL;
	}
	if (l <= 2)
		w->cb(w->ctx, gpa, l, est(e), e & PA_MASK);
	if (l == 2 && !in_window(w, gpa >> 30))
		return NULL;
	return table(m, e);
}

u64 seam_sept_gen(struct seam *m, u64 tdr_pa)
{
	u64 err;
	struct tdr *td = tdr_of(m, tdr_pa, &err);

	return td ? td->sept_gen : 0;
}

void seam_sept_leaves(struct seam *m, u64 tdr_pa,
		      void (*cb)(void *ctx, u64 gpa, int level, u32 state, u64 pa), void *ctx)
{
	seam_sept_window(m, tdr_pa, NULL, 0, cb, ctx);
}

void seam_sept_window(struct seam *m, u64 tdr_pa, const u64 *gibs, int n,
		      void (*cb)(void *ctx, u64 gpa, int level, u32 state, u64 pa), void *ctx)
{
	u64 err;
	struct tdr *td = tdr_of(m, tdr_pa, &err);
	struct sept_walk w = { cb, ctx, gibs, n };

	if (!td || td->nr_tdcs < SEAM_TDCS_PAGES || !td->levels)
		return;
	walk_tree(m, table(m, td->tdcs[SEAM_TDCS_PAGES - 1]), td->levels - 1, sept_visit, &w);
}

struct shared_walk {
	void (*cb)(void *ctx, u64 gpa, int level, int kind);
	void *ctx;
};

/* KVM's EPT entries: not present with SUPPRESS_VE clear is an MMIO SPTE (kind 0); present
 * leaves are kind 1; entries KVM initialised as not present (SUPPRESS_VE set) are skipped. */
static u64 *shared_visit(struct seam *m, u64 e, int l, u64 gpa, void *p)
{
	struct shared_walk *w = p;

	if (!(e & 7)) {
		if (!(e >> 63))
			w->cb(w->ctx, gpa, l, 0);
		return NULL;
	}
	if (l == 0 || (e & 0x80)) {
		w->cb(w->ctx, gpa, l, 1);
		return NULL;
	}
	return page(m, e & PA_MASK);
}

/* KVM's shared EPT of a TD (the root its vCPUs were last given). */
void seam_shared_ept(struct seam *m, u64 tdr_pa, void (*cb)(void *ctx, u64 gpa, int level, int kind),
		     void *ctx)
{
	u64 err;
	struct tdr *td = tdr_of(m, tdr_pa, &err);
	struct shared_walk w = { cb, ctx };

	if (!td || !td->shared_eptp)
		return;
	walk_tree(m, page(m, td->shared_eptp & PA_MASK), ((td->shared_eptp >> 3) & 7) == 4 ? 4 : 3, shared_visit,
	     &w);
}

int seam_page_type(struct seam *m, u64 pa, u64 *owner)
{
	struct pamt *p = pamt_of(m, pa & PAGE_MASK_);

	if (!p)
		return -1;
	if (owner)
		*owner = pt_owner(p);
	return pt_type(p);
}

unsigned long seam_size(void)
{
	return sizeof(struct seam);
}

u64 seam_guest_accept(struct seam *m, u64 tdr_pa, u64 gpa, int level, bool *exit)
{
	u64 err;
	struct tdr *td = td_usable(m, tdr_pa, &err);

	*exit = false;
	if (!td)
		return err;
	return accept(m, td, gpa, level, exit);
}

void seam_set_run_on(struct seam *m, u32 us)
{
	m->run_on_us = us;
}

void seam_contention(struct seam *m, u64 out[6])
{
	out[0] = m->met_inside;
	out[1] = m->entry_busy;
	out[2] = m->host_priority;
	out[3] = m->epoch_busy;
	out[4] = m->untracked_inside;
	out[5] = m->interrupted_runs;
}
