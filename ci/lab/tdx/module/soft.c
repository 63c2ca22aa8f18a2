// SPDX-License-Identifier: GPL-2.0
/*
 * The software TDX module's home in the lab kernel (CONFIG_INTEL_TDX_SOFT, boot
 * parameter tdx_soft): every SEAMCALL the kernel makes lands in tdx_soft_seamcall() (the glue
 * in seamcall_internal.h and tdh_vp_enter()), which runs privmem's module core (seam.c, shared
 * with privmem's host tests) under one lock, which TDH.VP.ENTER lets go while its guest runs
 * (run_on, below). The module is simulated: no SEAM mode, no guest instruction stream;
 * TDH.VP.ENTER interprets the TD shim's command page.
 *
 * debugfs (tdx_soft/):
 *   calls   SEAMCALLs per leaf since boot ("LEAF COUNT" lines)
 *   unmap   "aliased N unmapped N missed N": RAM ranges the module reads through its alias,
 *           pages taken out of the direct map while a TD owned them, changes not made
 *   total   SEAMCALLs since boot, any leaf (privmem reads sept again only when it moved)
 *   run_on  microseconds (at most 20000) a vCPU's guest runs on after its batch with the
 *           module's lock let go (and inside an ACCEPT of a pending page, an eighth of it): 0
 *           (the default) keeps VP.ENTER under the lock; privmem sets it around its concurrent
 *           groups
 *   contention  what a vCPU inside the TD met: host S-EPT SEAMCALLs meanwhile, OPERAND_BUSY
 *           on an ACCEPT's entry, ACCEPT waits for the host's priority, TRACKs refused
 *           (PREVIOUS_TLB_EPOCH_BUSY), REMOVE/DEMOTE/PROMOTE refused for a vCPU still inside,
 *           guest runs an interrupt cut short
 *   inject  write "LEAF busy N" or "LEAF interrupted N": the next N calls of that leaf
 *           return TDX_OPERAND_BUSY / the leaf's INTERRUPTED status and change nothing;
 *           "S-EPT busy N": the next N S-EPT leaves, whichever (privmem's seamcall-busy)
 *   sept    every live TD's S-EPT: a "td TDR" line, then "GPA LEVEL STATE PA" per leaf and
 *           per 1G non-leaf entry (a gigabyte's tables show as its 1G entry)
 *   dump_td write a TDR (hex): sept and shared list that TD only; 0: every TD
 *   dump_gib  write up to 64 gigabyte numbers (hex): sept lists leaves in those only (every
 *           1G entry still); nothing written: everywhere
 *   sept_gen  S-EPT entry writes of dump_td's TD (of every TD where 0): privmem reads sept
 *           again only when it moved
 *   sept_skip  write up to four "START SIZE" pairs (hex): GPA ranges sept leaves out
 *   shared  every live TD's shared EPT (KVM's): "td TDR", then "GPA LEVEL leaf|mmio" per
 *           present leaf and MMIO SPTE
 */
#include <linux/debugfs.h>
#include <linux/init.h>
#include <linux/ioport.h>
#include <linux/mm.h>
#include <linux/seq_file.h>
#include <linux/set_memory.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/timekeeping.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <asm/apic.h>
#include <asm/set_memory.h>
#include <asm/tlbflush.h>
#include <asm/tdx.h>
#include <asm/tdx_soft.h>

#include "seam.c"

static struct seam soft_module;
static DEFINE_RAW_SPINLOCK(soft_lock);
static bool soft_ready;
/* The TDRs of live TDs (for the sept dump): added at TDH.MNG.CREATE, dropped at the TDR's
 * reclaim. */
#define SOFT_MAX_TDS 256
static u64 soft_tds[SOFT_MAX_TDS];
/* SEAMCALLs since boot, any leaf: the sept dump cannot have changed while this stands still. */
static u64 soft_total;
/*
 * Boot parameter tdx_soft_huge: the huge-page interface (2M AUG, DEMOTE, PROMOTE) for a kernel
 * carrying the series, with TDX_FEATURES0.ENHANCED_DEMOTE_INTERRUPTIBILITY; "tdx_soft_huge=
 * interruptible" leaves that bit out (a module before 1.5.28, DEMOTE interruptible).
 */
static u32 soft_flags;

static int __init soft_huge_setup(char *arg)
{
	soft_flags = SEAM_F_HUGE_PAGES;
	if (!arg || strcmp(arg, "=interruptible"))
		soft_flags |= SEAM_F_ENHANCED_DEMOTE;
	pr_info("soft TDX module: huge pages (2M AUG, DEMOTE, PROMOTE)%s\n",
		soft_flags & SEAM_F_ENHANCED_DEMOTE ? ", ENHANCED_DEMOTE_INTERRUPTIBILITY" : "");
	return 1;
}
__setup("tdx_soft_huge", soft_huge_setup);

/*
 * A TD's private pages leave the kernel's direct map while the TD owns them (PAGE.ADD, AUG,
 * SEPT.ADD to REMOVE and reclaim), so that a host touch of one oopses as it would on hardware
 * (where it reads poison or, written, poisons the TD). The module itself reads every page
 * through an alias of RAM (vmap'd at boot), as the real one reads through its own key.
 * Changing the direct map may not allocate in the SEAMCALL's context (under mmu_lock, with
 * interrupts off): RAM's direct map is split to 4K at boot, and the changes a SEAMCALL makes
 * are applied after the module's lock is dropped, before the SEAMCALL returns.
 */
#define SOFT_ALIASES 64
/* Pages per alias (vmap() takes no more than RAM's pages at once). */
#define SOFT_ALIAS_PAGES (1UL << 16)
static struct {
	unsigned long start_pfn, end_pfn;
	u8 *va;
} soft_alias[SOFT_ALIASES];
static int nr_soft_alias;

static void *soft_page(void *ctx, u64 pa)
{
	unsigned long pfn = PHYS_PFN(pa);
	int i;

	if (!pfn_valid(pfn))
		return NULL;
	for (i = 0; i < READ_ONCE(nr_soft_alias); i++)
		if (pfn >= soft_alias[i].start_pfn && pfn < soft_alias[i].end_pfn)
			return soft_alias[i].va + (pa - PFN_PHYS(soft_alias[i].start_pfn));
	return __va(pa);
}

/* Ownership changes of one SEAMCALL (under soft_lock), contiguous runs coalesced. */
#define SOFT_PENDING 16
struct soft_change {
	u64 pa, pages;
	bool owned;
};
static struct soft_change soft_pending[SOFT_PENDING];
static int nr_soft_pending;
/* Pages that could not be unmapped (more changes in one call than the list holds, or a
 * failing change): counted, shown in debugfs (unmap). */
static u64 soft_unmap_missed, soft_unmapped;

static void soft_owned(void *ctx, u64 pa, bool owned)
{
	struct soft_change *c = nr_soft_pending ? &soft_pending[nr_soft_pending - 1] : NULL;
	void *alias = soft_page(ctx, pa);

	/* Only a page the module reads through its alias leaves the direct map. */
	if (!alias || alias == __va(pa))
		return;
	if (c && c->owned == owned && c->pa + c->pages * PAGE_SIZE == pa) {
		c->pages++;
		return;
	}
	if (nr_soft_pending == SOFT_PENDING) {
		soft_unmap_missed++;
		return;
	}
	soft_pending[nr_soft_pending++] = (struct soft_change){ pa, 1, owned };
}

/* After the module's lock: the direct map follows what the SEAMCALL changed. */
static void soft_apply(struct soft_change *c, int n)
{
	int i;
	u64 k;

	for (i = 0; i < n; i++) {
		unsigned long va = (unsigned long)__va(c[i].pa);

		for (k = 0; k < c[i].pages; k++) {
			struct page *p = pfn_to_page(PHYS_PFN(c[i].pa) + k);
			int r = c[i].owned ? set_direct_map_invalid_noflush(p) : set_direct_map_default_noflush(p);

			if (r)
				soft_unmap_missed++;
			else if (c[i].owned)
				soft_unmapped++;
		}
		/* A present entry is not cached; a stale one would let a touch through. */
		if (c[i].owned && !irqs_disabled())
			flush_tlb_kernel_range(va, va + c[i].pages * PAGE_SIZE);
		else if (c[i].owned)
			for (k = 0; k < c[i].pages; k++)
				flush_tlb_one_kernel(va + k * PAGE_SIZE);
	}
}

/* One piece of a System RAM range: its alias for the module. */
static int __init soft_alias_piece(unsigned long start, unsigned long n)
{
	struct page **pages;
	unsigned long k;
	void *va;

	if (nr_soft_alias == SOFT_ALIASES)
		return -ENOSPC;
	pages = kvmalloc_array(n, sizeof(*pages), GFP_KERNEL);
	if (!pages)
		return -ENOMEM;
	for (k = 0; k < n; k++)
		pages[k] = pfn_to_page(start + k);
	va = vmap(pages, n, VM_MAP, PAGE_KERNEL);
	kvfree(pages);
	if (!va)
		return -ENOMEM;
	soft_alias[nr_soft_alias].start_pfn = start;
	soft_alias[nr_soft_alias].end_pfn = start + n;
	soft_alias[nr_soft_alias].va = va;
	/* soft_page() reads the count without the lock: the entry is whole first. */
	smp_store_release(&nr_soft_alias, nr_soft_alias + 1);
	return 0;
}

/* One System RAM range: its direct map at 4K, and its alias in pieces. */
static int __init soft_alias_range(unsigned long start, unsigned long n, void *unused)
{
	unsigned long done;
	int r = set_memory_4k((unsigned long)__va(PFN_PHYS(start)), n);

	for (done = 0; !r && done < n; done += SOFT_ALIAS_PAGES)
		r = soft_alias_piece(start + done, min(n - done, SOFT_ALIAS_PAGES));
	return r;
}

/* Before any TD runs (userspace starts after the late initcalls). */
static int __init soft_alias_init(void)
{
	int r;

	if (!tdx_soft_enabled())
		return 0;
	r = walk_system_ram_range(0, max_pfn, NULL, soft_alias_range);
	pr_info("tdx_soft: %d RAM ranges aliased (%d); TD private pages leave the direct map\n",
		nr_soft_alias, r);
	return 0;
}
late_initcall(soft_alias_init);

static u32 soft_cpu(void *ctx)
{
	return raw_smp_processor_id();
}

static void soft_track_td(u64 fn, u64 tdr, u64 ret, u64 reclaimed_type)
{
	int i;

	if (ret)
		return;
	if ((fn & 0xffff) == SEAM_MNG_CREATE) {
		for (i = 0; i < SOFT_MAX_TDS; i++) {
			if (!soft_tds[i]) {
				soft_tds[i] = tdr;
				return;
			}
		}
	} else if ((fn & 0xffff) == SEAM_PHYMEM_PAGE_RECLAIM && reclaimed_type == SEAM_PT_TDR) {
		for (i = 0; i < SOFT_MAX_TDS; i++)
			if (soft_tds[i] == tdr)
				soft_tds[i] = 0;
	}
}

/* An interrupt for this CPU waits in its local APIC (interrupts are off in a SEAMCALL): on
 * hardware it would end the TD's run with an exit. */
static bool soft_irq_pending(void)
{
	int i;

	for (i = 0; i < 8; i++)
		if (apic_read(APIC_IRR + i * 0x10))
			return true;
	return false;
}

/* The guest runs (seam_env.guest_runs): the module's lock is let go for up to `us`
 * microseconds, or until an interrupt is pending. Called with soft_lock held, interrupts off. */
static bool soft_guest_runs(void *ctx, u32 us)
{
	u64 end;
	bool irq;

	raw_spin_unlock(&soft_lock);
	end = ktime_get_mono_fast_ns() + us * NSEC_PER_USEC;
	for (;;) {
		irq = soft_irq_pending();
		if (irq || ktime_get_mono_fast_ns() >= end)
			break;
		cpu_relax();
	}
	raw_spin_lock(&soft_lock);
	return irq;
}

u64 tdx_soft_seamcall(u64 fn, struct tdx_module_args *args)
{
	struct seam_regs *r = (struct seam_regs *)args;
	struct soft_change changes[SOFT_PENDING];
	unsigned long flags;
	u64 in_rcx = args->rcx, ret;
	int n;

	BUILD_BUG_ON(sizeof(struct seam_regs) != sizeof(struct tdx_module_args));
	raw_spin_lock_irqsave(&soft_lock, flags);
	if (!soft_ready) {
		struct seam_env env = { .page = soft_page, .cpu = soft_cpu, .owned = soft_owned,
					.guest_runs = soft_guest_runs };

		seam_init(&soft_module, &env, soft_flags);
		soft_ready = true;
	}
	ret = seam_call(&soft_module, fn, r);
	soft_total++;
	soft_track_td(fn, in_rcx, ret, args->rcx);
	n = nr_soft_pending;
	memcpy(changes, soft_pending, n * sizeof(*changes));
	nr_soft_pending = 0;
	raw_spin_unlock_irqrestore(&soft_lock, flags);
	if (n)
		soft_apply(changes, n);
	return ret;
}

static const char *const leaf_names[SEAM_NR_LEAVES] = {
	[SEAM_VP_ENTER] = "VP.ENTER", [SEAM_MNG_ADDCX] = "MNG.ADDCX",
	[SEAM_MEM_PAGE_ADD] = "MEM.PAGE.ADD", [SEAM_MEM_SEPT_ADD] = "MEM.SEPT.ADD",
	[SEAM_VP_ADDCX] = "VP.ADDCX", [SEAM_MEM_PAGE_AUG] = "MEM.PAGE.AUG",
	[SEAM_MEM_RANGE_BLOCK] = "MEM.RANGE.BLOCK", [SEAM_MNG_KEY_CONFIG] = "MNG.KEY.CONFIG",
	[SEAM_MNG_CREATE] = "MNG.CREATE", [SEAM_VP_CREATE] = "VP.CREATE",
	[SEAM_MNG_RD] = "MNG.RD", [SEAM_MR_EXTEND] = "MR.EXTEND",
	[SEAM_MR_FINALIZE] = "MR.FINALIZE", [SEAM_VP_FLUSH] = "VP.FLUSH",
	[SEAM_MNG_VPFLUSHDONE] = "MNG.VPFLUSHDONE", [SEAM_MNG_KEY_FREEID] = "MNG.KEY.FREEID",
	[SEAM_MNG_INIT] = "MNG.INIT", [SEAM_VP_INIT] = "VP.INIT",
	[SEAM_PHYMEM_PAGE_RDMD] = "PHYMEM.PAGE.RDMD", [SEAM_VP_RD] = "VP.RD",
	[SEAM_PHYMEM_PAGE_RECLAIM] = "PHYMEM.PAGE.RECLAIM",
	[SEAM_MEM_PAGE_REMOVE] = "MEM.PAGE.REMOVE", [SEAM_SYS_KEY_CONFIG] = "SYS.KEY.CONFIG",
	[SEAM_SYS_INIT] = "SYS.INIT", [SEAM_SYS_RD] = "SYS.RD", [SEAM_SYS_LP_INIT] = "SYS.LP.INIT",
	[SEAM_SYS_TDMR_INIT] = "SYS.TDMR.INIT", [SEAM_MEM_TRACK] = "MEM.TRACK",
	[SEAM_PHYMEM_CACHE_WB] = "PHYMEM.CACHE.WB", [SEAM_PHYMEM_PAGE_WBINVD] = "PHYMEM.PAGE.WBINVD",
	[SEAM_VP_WR] = "VP.WR", [SEAM_SYS_CONFIG] = "SYS.CONFIG",
	[SEAM_SYS_DISABLE] = "SYS.DISABLE", [SEAM_MEM_PAGE_DEMOTE] = "MEM.PAGE.DEMOTE",
	[SEAM_MEM_PAGE_PROMOTE] = "MEM.PAGE.PROMOTE",
};

/* What a vCPU inside the TD met and caused (struct seam's counters, seam.h). */
static int contention_show(struct seq_file *s, void *unused)
{
	struct seam *m = &soft_module;

	seq_printf(s, "met_inside %llu entry_busy %llu host_priority %llu epoch_busy %llu "
		   "untracked_inside %llu interrupted_runs %llu\n", READ_ONCE(m->met_inside),
		   READ_ONCE(m->entry_busy), READ_ONCE(m->host_priority), READ_ONCE(m->epoch_busy),
		   READ_ONCE(m->untracked_inside), READ_ONCE(m->interrupted_runs));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(contention);

/* run_on: at most 20 ms (the guest runs with interrupts off on its CPU meanwhile, unless an
 * interrupt ends the run: longer would be a lockup, not a TD). */
#define SOFT_RUN_ON_MAX 20000

static ssize_t run_on_write(struct file *f, const char __user *ubuf, size_t len, loff_t *off)
{
	unsigned long flags;
	unsigned int us;
	int err = kstrtouint_from_user(ubuf, len, 0, &us);

	if (err)
		return err;
	raw_spin_lock_irqsave(&soft_lock, flags);
	soft_module.run_on_us = min_t(unsigned int, us, SOFT_RUN_ON_MAX);
	raw_spin_unlock_irqrestore(&soft_lock, flags);
	return len;
}

static int run_on_show(struct seq_file *s, void *unused)
{
	seq_printf(s, "%u\n", READ_ONCE(soft_module.run_on_us));
	return 0;
}

static int run_on_open(struct inode *inode, struct file *f)
{
	return single_open(f, run_on_show, NULL);
}

static const struct file_operations run_on_fops = {
	.open = run_on_open,
	.read = seq_read,
	.llseek = seq_lseek,
	.release = single_release,
	.write = run_on_write,
};

static int calls_show(struct seq_file *s, void *unused)
{
	int i;

	for (i = 0; i < SEAM_NR_LEAVES; i++)
		if (leaf_names[i])
			seq_printf(s, "%s %llu\n", leaf_names[i], READ_ONCE(soft_module.calls[i]));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(calls);

/* The direct map: pages unmapped while a TD owned them, and changes that did not happen. */
static int unmap_show(struct seq_file *s, void *unused)
{
	seq_printf(s, "aliased %d unmapped %llu missed %llu\n", READ_ONCE(nr_soft_alias),
		   READ_ONCE(soft_unmapped), READ_ONCE(soft_unmap_missed));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(unmap);

static int total_show(struct seq_file *s, void *unused)
{
	seq_printf(s, "%llu\n", READ_ONCE(soft_total));
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(total);

/* GPA ranges the sept dump leaves out (privmem's TD shim image: written once to sept_skip,
 * so that the dump it reads after every step holds the case's entries only). */
#define SOFT_SKIPS 4
static u64 sept_skip[SOFT_SKIPS][2];

static void sept_line(void *ctx, u64 gpa, int level, u32 state, u64 pa)
{
	int i;

	/* Tables below 1G: privmem reads leaves, and which gigabytes have any entry. */
	if ((state & 0x80) && level != 2)
		return;

	for (i = 0; i < SOFT_SKIPS; i++)
		if (gpa >= sept_skip[i][0] && gpa - sept_skip[i][0] < sept_skip[i][1])
			return;
	seq_printf(ctx, "%llx %d %x %llx\n", gpa, level, state, pa);
}

static ssize_t sept_skip_write(struct file *f, const char __user *ubuf, size_t len, loff_t *off)
{
	u64 r[SOFT_SKIPS][2] = {};
	unsigned long flags;
	char buf[160];
	int n;

	if (len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = 0;
	n = sscanf(buf, "%llx %llx %llx %llx %llx %llx %llx %llx", &r[0][0], &r[0][1], &r[1][0],
		   &r[1][1], &r[2][0], &r[2][1], &r[3][0], &r[3][1]);
	if (n < 0 || n % 2)
		return -EINVAL;
	raw_spin_lock_irqsave(&soft_lock, flags);
	memcpy(sept_skip, r, sizeof(r));
	raw_spin_unlock_irqrestore(&soft_lock, flags);
	return len;
}

static const struct file_operations sept_skip_fops = {
	.write = sept_skip_write,
};

/* The TD the dumps list (dump_td), 0 for all: privmem reads one TD's S-EPT after every step,
 * and kept TDs would otherwise be in every reading. */
static u64 dump_td;

static ssize_t dump_td_write(struct file *f, const char __user *ubuf, size_t len, loff_t *off)
{
	unsigned long flags;
	u64 tdr;
	int r = kstrtoull_from_user(ubuf, len, 16, &tdr);

	if (r)
		return r;
	raw_spin_lock_irqsave(&soft_lock, flags);
	dump_td = tdr;
	raw_spin_unlock_irqrestore(&soft_lock, flags);
	return len;
}

static const struct file_operations dump_td_fops = {
	.write = dump_td_write,
};

/* Whether the dumps list soft_tds[i] (under soft_lock). */
static bool listed(int i)
{
	return soft_tds[i] && (!dump_td || soft_tds[i] == dump_td);
}

/* Every live TD (or dump_td's): a "td TDR" line, then what `dump` prints of it. Under the
 * module's lock: a consistent picture, as KVM can't change it meanwhile. */
static int each_td(struct seq_file *s, void (*dump)(struct seq_file *s, u64 tdr))
{
	unsigned long flags;
	int i;

	raw_spin_lock_irqsave(&soft_lock, flags);
	for (i = 0; i < SOFT_MAX_TDS; i++) {
		if (!listed(i))
			continue;
		seq_printf(s, "td %llx\n", soft_tds[i]);
		dump(s, soft_tds[i]);
	}
	raw_spin_unlock_irqrestore(&soft_lock, flags);
	return 0;
}

#define SOFT_GIBS 64
static u64 dump_gib[SOFT_GIBS];
static int nr_dump_gib;

static ssize_t dump_gib_write(struct file *f, const char __user *ubuf, size_t len, loff_t *off)
{
	u64 g[SOFT_GIBS];
	unsigned long flags;
	char *buf, *p, *tok;
	int n = 0, r = 0;

	buf = memdup_user_nul(ubuf, min_t(size_t, len, 2048));
	if (IS_ERR(buf))
		return PTR_ERR(buf);
	p = buf;
	while ((tok = strsep(&p, " \n")) && !r) {
		if (!*tok)
			continue;
		if (n == SOFT_GIBS)
			r = -E2BIG;
		else
			r = kstrtoull(tok, 16, &g[n++]);
	}
	kfree(buf);
	if (r)
		return r;
	raw_spin_lock_irqsave(&soft_lock, flags);
	memcpy(dump_gib, g, n * sizeof(u64));
	nr_dump_gib = n;
	raw_spin_unlock_irqrestore(&soft_lock, flags);
	return len;
}

static const struct file_operations dump_gib_fops = {
	.write = dump_gib_write,
};

static void sept_dump(struct seq_file *s, u64 tdr)
{
	seam_sept_window(&soft_module, tdr, dump_gib, nr_dump_gib, sept_line, s);
}

static int sept_show(struct seq_file *s, void *unused)
{
	return each_td(s, sept_dump);
}
DEFINE_SHOW_ATTRIBUTE(sept);

/* The sum over the TDs the dumps list: the reader asks after one TD (dump_td). */
static int sept_gen_show(struct seq_file *s, void *unused)
{
	unsigned long flags;
	u64 sum = 0;
	int i;

	raw_spin_lock_irqsave(&soft_lock, flags);
	for (i = 0; i < SOFT_MAX_TDS; i++)
		if (listed(i))
			sum += seam_sept_gen(&soft_module, soft_tds[i]);
	raw_spin_unlock_irqrestore(&soft_lock, flags);
	seq_printf(s, "%llu\n", sum);
	return 0;
}
DEFINE_SHOW_ATTRIBUTE(sept_gen);

static void shared_line(void *ctx, u64 gpa, int level, int kind)
{
	seq_printf(ctx, "%llx %d %s\n", gpa, level, kind ? "leaf" : "mmio");
}

/* KVM's shared EPT of each TD, as the module reads it: what a TD's reset must leave empty. */
static void shared_dump(struct seq_file *s, u64 tdr)
{
	seam_shared_ept(&soft_module, tdr, shared_line, s);
}

static int shared_show(struct seq_file *s, void *unused)
{
	return each_td(s, shared_dump);
}
DEFINE_SHOW_ATTRIBUTE(shared);

static ssize_t inject_write(struct file *f, const char __user *ubuf, size_t len, loff_t *off)
{
	char buf[64], what[16], name[24];
	unsigned long flags;
	unsigned int n;
	int i;

	if (len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = 0;
	if (sscanf(buf, "%23s %15s %u", name, what, &n) != 3)
		return -EINVAL;
	if (!strcmp(name, "S-EPT") && !strcmp(what, "busy")) {
		raw_spin_lock_irqsave(&soft_lock, flags);
		soft_module.sept_busy = n;
		raw_spin_unlock_irqrestore(&soft_lock, flags);
		return len;
	}
	for (i = 0; i < SEAM_NR_LEAVES; i++)
		if (leaf_names[i] && !strcmp(leaf_names[i], name))
			break;
	if (i == SEAM_NR_LEAVES)
		return -ENOENT;
	raw_spin_lock_irqsave(&soft_lock, flags);
	if (!strcmp(what, "busy"))
		soft_module.inject[i].busy = n;
	else if (!strcmp(what, "interrupted"))
		soft_module.inject[i].interrupted = n;
	else
		i = -1;
	raw_spin_unlock_irqrestore(&soft_lock, flags);
	return i < 0 ? -EINVAL : len;
}

static const struct file_operations inject_fops = {
	.write = inject_write,
};

static int __init tdx_soft_debugfs(void)
{
	struct dentry *d;

	if (!tdx_soft_enabled())
		return 0;
	d = debugfs_create_dir("tdx_soft", NULL);
	debugfs_create_file("calls", 0444, d, NULL, &calls_fops);
	debugfs_create_file("total", 0444, d, NULL, &total_fops);
	debugfs_create_file("unmap", 0444, d, NULL, &unmap_fops);
	debugfs_create_file("sept", 0444, d, NULL, &sept_fops);
	debugfs_create_file("shared", 0444, d, NULL, &shared_fops);
	debugfs_create_file("sept_skip", 0200, d, NULL, &sept_skip_fops);
	debugfs_create_file("dump_td", 0200, d, NULL, &dump_td_fops);
	debugfs_create_file("dump_gib", 0200, d, NULL, &dump_gib_fops);
	debugfs_create_file("sept_gen", 0444, d, NULL, &sept_gen_fops);
	debugfs_create_file("inject", 0200, d, NULL, &inject_fops);
	debugfs_create_file("contention", 0444, d, NULL, &contention_fops);
	debugfs_create_file("run_on", 0600, d, NULL, &run_on_fops);
	return 0;
}
late_initcall(tdx_soft_debugfs);
