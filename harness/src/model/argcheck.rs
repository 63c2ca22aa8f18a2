//! The argument checks of the ioctls privmem drives, one table per ioctl, in the order the
//! kernel makes them, each row citing the function that makes it and the kernels it holds on.
//! Each row carries the op that fails exactly that check (every earlier one passing) and, where
//! there is one, the op just on the passing side of the same boundary: together the generated
//! family `corpus/argcheck/` (`privmem argcheck --emit DIR` writes it; a test keeps it current),
//! which runs on the model as every kernel, on this host and in the lab.
//!
//! Paths userspace cannot take through privmem's language are listed as `unreachable`: the
//! harness always passes its own page-aligned userspace address and its own guest_memfd fds.

use crate::seq::{Errno, Kernel};

pub struct Check {
    pub function: &'static str,
    pub check: &'static str,
    pub errno: Errno,
    /// The kernels the row holds on; empty: all.
    pub kernels: &'static [Kernel],
    /// Extra header lines (a VM type of its own, a `gmem`), replacing the table's `vm` line
    /// when they start with `vm`.
    pub header: &'static str,
    /// The op failing this check, `OP => err ERRNO`, after any set-up lines before it.
    pub hit: &'static str,
    /// The op on the passing side of the boundary, with its outcome.
    pub edge: Option<&'static str>,
}

pub struct Table {
    pub ioctl: &'static str,
    pub short: &'static str,
    pub header: &'static str,
    pub checks: &'static [Check],
    /// Checks of the kernel's that the language cannot reach, and why.
    pub unreachable: &'static [&'static str],
}

const ALL: &[Kernel] = &[];
const TO_6_18: &[Kernel] = &[Kernel::V6_12, Kernel::V6_18];
const FROM_6_18: &[Kernel] = &[Kernel::V6_18, Kernel::V7_3, Kernel::Next];
const FROM_7_3: &[Kernel] = &[Kernel::V7_3, Kernel::Next];
const ONLY_6_12: &[Kernel] = &[Kernel::V6_12];

macro_rules! check {
    ($f:expr, $c:expr, $e:ident, $k:expr, $h:expr, $hit:expr, $edge:expr) => {
        Check { function: $f, check: $c, errno: Errno::$e, kernels: $k, header: $h, hit: $hit, edge: $edge }
    };
}

pub const TABLES: &[Table] = &[
    Table {
        ioctl: "KVM_CREATE_GUEST_MEMFD",
        short: "create-gmem",
        header: "vm default",
        checks: &[
            check!("kvm_gmem_create()", "flags outside kvm_gmem_get_supported_flags()", EINVAL, ALL, "",
                "gmem-create a size=2M flags=0x4 => err EINVAL", Some("gmem-create b size=2M => ok")),
            check!("kvm_gmem_create()", "any flag: 6.12 supports none", EINVAL, ONLY_6_12, "",
                "gmem-create a size=2M mmap => err EINVAL", Some("gmem-create b size=2M => ok")),
            check!("kvm_gmem_create()", "MMAP is supported (kvm_gmem_get_supported_flags())", EINVAL, FROM_6_18, "",
                "gmem-create a size=2M flags=0x8 => err EINVAL", Some("gmem-create b size=2M mmap => ok")),
            check!("kvm_gmem_create()", "INIT_SHARED where the VM has private memory (kvm_arch_supports_gmem_init_shared())",
                EINVAL, FROM_6_18, "vm sw-protected",
                "gmem-create a size=2M init-shared => err EINVAL", Some("gmem-create b size=2M mmap => ok")),
            check!("kvm_gmem_create()", "size <= 0 (zero)", EINVAL, ALL, "",
                "gmem-create a size=0 => err EINVAL", Some("gmem-create b size=4K => ok")),
            check!("kvm_gmem_create()", "size <= 0 (2^63 and up: a negative loff_t)", EINVAL, ALL, "",
                "gmem-create a size=0x8000000000000000 => err EINVAL",
                Some("gmem-create b size=0x7ffffffffffff000 => ok")),
            check!("kvm_gmem_create()", "size not page aligned", EINVAL, ALL, "",
                "gmem-create a size=0x1800 => err EINVAL", Some("gmem-create b size=0x2000 => ok")),
        ],
        unreachable: &["__kvm_gmem_create(): anon inode or fd allocation failures (ENOMEM, EMFILE)"],
    },
    Table {
        ioctl: "fallocate(2) on guest_memfd",
        short: "fallocate",
        header: "vm sw-protected\ngmem g size=2M",
        checks: &[
            check!("vfs_fallocate()", "offset < 0", EINVAL, ALL, "",
                "fallocate g 0x8000000000000000 4K => err EINVAL", Some("fallocate g 0 4K => ok")),
            check!("vfs_fallocate()", "len <= 0", EINVAL, ALL, "",
                "fallocate g 0 0 => err EINVAL", Some("fallocate g 0 4K => ok")),
            check!("vfs_fallocate()", "len <= 0, before the mode checks", EINVAL, ALL, "",
                "fallocate g 0 0 punch no-keep-size => err EINVAL",
                Some("fallocate g 0 4K punch no-keep-size => err EOPNOTSUPP")),
            check!("vfs_fallocate()", "PUNCH_HOLE without KEEP_SIZE", EOPNOTSUPP, ALL, "",
                "fallocate g 0 4K punch no-keep-size => err EOPNOTSUPP", Some("fallocate g 0 4K punch => ok")),
            check!("vfs_fallocate()", "offset + len overflows loff_t", EFBIG, ALL, "",
                "fallocate g 0x7ffffffffffff000 0x2000 => err EFBIG",
                Some("fallocate g 0x7fffffffffffe000 0x1000 => err EINVAL")),
            check!("kvm_gmem_fallocate()", "no KEEP_SIZE", EOPNOTSUPP, ALL, "",
                "fallocate g 0 4K no-keep-size => err EOPNOTSUPP", Some("fallocate g 0 4K => ok")),
            check!("kvm_gmem_fallocate()", "offset not page aligned", EINVAL, ALL, "",
                "fallocate g 0x800 4K => err EINVAL", Some("fallocate g 0x1000 4K => ok")),
            check!("kvm_gmem_fallocate()", "len not page aligned", EINVAL, ALL, "",
                "fallocate g 0 0x800 => err EINVAL", Some("fallocate g 0 0x1000 => ok")),
            check!("kvm_gmem_allocate()", "offset + len past the file's size (punching there is fine)", EINVAL, ALL, "",
                "fallocate g 1M 0x101000 => err EINVAL", Some("fallocate g 1M 0x101000 punch => ok")),
        ],
        unreachable: &[
            "vfs_fallocate(): a file not open for writing (EBADF), append-only or immutable inodes (EPERM): guest_memfd fds are always O_RDWR",
            "vfs_fallocate(): unknown mode bits (EOPNOTSUPP): the language has KEEP_SIZE and PUNCH_HOLE only",
        ],
    },
    Table {
        ioctl: "KVM_SET_USER_MEMORY_REGION2",
        short: "memslot",
        header: "vm sw-protected\ngmem g size=4M\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0",
        checks: &[
            check!("kvm_vm_ioctl_set_memory_region()", "(u16)slot >= KVM_USER_MEM_SLOTS", EINVAL, ALL, "",
                "slot-add 32764 gpa=0x200000000 size=2M => err EINVAL",
                Some("slot-add 32762 gpa=0x200000000 size=2M => ok")),
            check!("check_memory_region_flags()", "READONLY with GUEST_MEMFD", EINVAL, ALL, "",
                "slot-add 1 gpa=0x200000000 size=2M gmem=g offset=2M readonly => err EINVAL",
                Some("slot-add 1 gpa=0x200000000 size=2M gmem=g offset=2M => ok")),
            check!("kvm_set_memory_region()", "size not page aligned", EINVAL, ALL, "",
                "slot-add 1 gpa=0x200000000 size=0x1800 => err EINVAL",
                Some("slot-add 1 gpa=0x200000000 size=0x2000 => ok")),
            check!("kvm_set_memory_region()", "guest_phys_addr not page aligned", EINVAL, ALL, "",
                "slot-add 1 gpa=0x200000800 size=2M => err EINVAL", Some("slot-add 1 gpa=0x200001000 size=2M => ok")),
            check!("kvm_set_memory_region()", "guest_memfd_offset not page aligned", EINVAL, ALL, "",
                "slot-add 1 gpa=0x200000000 size=4K gmem=g offset=0x200800 => err EINVAL",
                Some("slot-add 1 gpa=0x200000000 size=4K gmem=g offset=0x201000 => ok")),
            check!("kvm_set_memory_region()", "guest_memfd_offset + size wraps", EINVAL, ALL, "",
                "slot-add 1 gpa=0x200000000 size=8K gmem=g offset=0xfffffffffffff000 => err EINVAL",
                Some("slot-add 1 gpa=0x200000000 size=8K gmem=g offset=0x200000 => ok")),
            check!("kvm_set_memory_region()", "address space beyond kvm_arch_nr_memslot_as_ids() (one with private memory)",
                EINVAL, ALL, "",
                "slot-add 65536 gpa=0x200000000 size=2M => err EINVAL", Some("slot-add 1 gpa=0x200000000 size=2M => ok")),
            check!("kvm_set_memory_region()", "guest_phys_addr + size wraps", EINVAL, ALL, "",
                "slot-add 1 gpa=0xffffffffffe00000 size=4M => err EINVAL",
                Some("slot-add 1 gpa=0x200000000 size=4M => ok")),
            check!("kvm_set_memory_region()", "size 0 (delete) of a slot that does not exist", EINVAL, ALL, "",
                "slot-add 5 gpa=0x200000000 size=0 => err EINVAL", Some("slot-add 0 gpa=0x100000000 size=0 => ok")),
            check!("kvm_set_memory_region()", "a guest_memfd slot is modified", EINVAL, ALL, "",
                "slot-add 0 gpa=0x100000000 size=2M gmem=g offset=0 => err EINVAL", None),
            check!("kvm_set_memory_region()", "the range overlaps another slot", EEXIST, ALL, "",
                "slot-add 1 gpa=0x100100000 size=2M => err EEXIST", Some("slot-add 1 gpa=0x100200000 size=2M => ok")),
            check!("kvm_arch_prepare_memory_region()", "the end beyond kvm_mmu_max_gfn() (52 bits at most)", EINVAL, ALL, "",
                "slot-add 1 gpa=0xfffffffe00000 size=4M => err EINVAL", None),
            check!("kvm_gmem_bind()", "guest_memfd_offset + size past the file's size", EINVAL, ALL, "",
                "slot-add 1 gpa=0x200000000 size=8K gmem=g offset=0x3ff000 => err EINVAL",
                Some("slot-add 1 gpa=0x200000000 size=4K gmem=g offset=0x3ff000 => ok")),
            check!("kvm_gmem_bind()", "a range another slot has bound (6.12, 6.18)", EINVAL, TO_6_18, "",
                "slot-add 1 gpa=0x200000000 size=2M gmem=g offset=1M => err EINVAL",
                Some("slot-add 1 gpa=0x200000000 size=2M gmem=g offset=2M => ok")),
            check!("kvm_gmem_commit_memory_region()", "a range another slot has bound (7.3)", EEXIST, FROM_7_3, "",
                "slot-add 1 gpa=0x200000000 size=2M gmem=g offset=1M => err EEXIST",
                Some("slot-add 1 gpa=0x200000000 size=2M gmem=g offset=2M => ok")),
        ],
        unreachable: &[
            "kvm_set_memory_region(): userspace_addr not page aligned or not accessible: the harness passes its own mapping",
            "kvm_set_memory_region(): npages > KVM_MEM_MAX_NR_PAGES: the harness would have to map 8 TiB first (model only: memslot.rs)",
            "kvm_gmem_bind(): a bad fd (EBADF), not a guest_memfd (EINVAL), another VM's file (EINVAL): slots bind the case's own files",
        ],
    },
    Table {
        ioctl: "KVM_SET_MEMORY_ATTRIBUTES",
        short: "attributes",
        header: "vm sw-protected\ngmem g size=2M\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0",
        checks: &[
            check!("kvm_vm_ioctl_set_mem_attributes()", "size 0", EINVAL, ALL, "",
                "private 0x100000000 0 => err EINVAL", Some("private 0x100000000 4K => ok")),
            check!("kvm_vm_ioctl_set_mem_attributes()", "address + size wraps (an end of exactly 2^64 too)", EINVAL, ALL, "",
                "private 0xfffffffffffff000 8K => err EINVAL", Some("private 0xffffffffffffe000 4K => ok")),
            check!("kvm_vm_ioctl_set_mem_attributes()", "address not page aligned", EINVAL, ALL, "",
                "private 0x100000800 4K => err EINVAL", Some("private 0x100001000 4K => ok")),
            check!("kvm_vm_ioctl_set_mem_attributes()", "size not page aligned", EINVAL, ALL, "",
                "shared 0x100000000 0x800 => err EINVAL", Some("shared 0x100000000 0x1000 => ok")),
        ],
        unreachable: &[
            "kvm_vm_ioctl_set_mem_attributes(): flags != 0, attributes beyond kvm_supported_mem_attributes(): the language sets PRIVATE or nothing",
            "kvm_vm_set_mem_attributes(): xarray allocation failure (ENOMEM): injected on the model only (H2)",
        ],
    },
    Table {
        ioctl: "KVM_PRE_FAULT_MEMORY",
        short: "prefault",
        header: "vm sw-protected\ngmem g size=2M\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0",
        checks: &[
            check!("kvm_vcpu_pre_fault_memory()", "gpa not page aligned", EINVAL, ALL, "",
                "prefault vcpu0 0x100000800 4K => err EINVAL", Some("prefault vcpu0 0x100001000 4K => ok")),
            check!("kvm_vcpu_pre_fault_memory()", "size not page aligned", EINVAL, ALL, "",
                "prefault vcpu0 0x100000000 0x800 => err EINVAL", Some("prefault vcpu0 0x100000000 0x1000 => ok")),
            check!("kvm_vcpu_pre_fault_memory()", "gpa + size <= gpa (size 0)", EINVAL, ALL, "",
                "prefault vcpu0 0x100000000 0 => err EINVAL", Some("prefault vcpu0 0x100000000 4K => ok")),
            check!("kvm_vcpu_pre_fault_memory()", "gpa + size <= gpa (wraps)", EINVAL, ALL, "",
                "prefault vcpu0 0xfffffffffffff000 8K => err EINVAL", None),
            check!("kvm_tdp_page_prefault()", "no memslot at gpa", ENOENT, ALL, "",
                "prefault vcpu0 0x200000000 4K => err ENOENT", Some("prefault vcpu0 0x1001ff000 4K => ok")),
            check!("kvm_tdp_page_prefault()", "a private GFN with no guest_memfd behind it: a memory fault", EFAULT,
                ALL, "vm sw-protected\nslot 0 gpa=0x100000000 size=2M",
                "private 0x100000000 4K => ok\nprefault vcpu0 0x100000000 4K => err EFAULT",
                Some("prefault vcpu0 0x100001000 4K => ok")),
        ],
        unreachable: &["kvm_vcpu_pre_fault_memory(): flags != 0: the language has none"],
    },
    Table {
        ioctl: "KVM_TDX_INIT_MEM_REGION and KVM_TDX_FINALIZE_VM",
        short: "tdx-build",
        header: "vm tdx\nvariant upstream\ngmem g size=2M\nslot 0 gpa=0x100000000 size=2M gmem=g offset=0",
        checks: &[
            check!("tdx_vcpu_init_mem_region()", "the TD is already finalized (runnable)", EINVAL, ALL, "",
                "private 0x100000000 2M => ok\nfinalize => ok\ninit-mem 0x100000000 1 => err EINVAL", None),
            check!("tdx_vcpu_init_mem_region()", "gpa not page aligned", EINVAL, ALL, "",
                "private 0x100000000 2M => ok\ninit-mem 0x100000800 1 => err EINVAL",
                Some("init-mem 0x100000000 1 => ok")),
            check!("tdx_vcpu_init_mem_region()", "nr_pages 0", EINVAL, ALL, "",
                "private 0x100000000 2M => ok\ninit-mem 0x100000000 0 => err EINVAL",
                Some("init-mem 0x100000000 1 => ok")),
            check!("tdx_vcpu_init_mem_region()", "gpa + nr_pages wraps", EINVAL, ALL, "",
                "private 0x100000000 2M => ok\ninit-mem 0xfffffffffffff000 2 => err EINVAL", None),
            check!("tdx_vcpu_init_mem_region()", "a shared-bit GPA (vt_is_tdx_private_gpa())", EINVAL, ALL, "",
                "private 0x100000000 2M => ok\ninit-mem 0x800100000000 1 => err EINVAL",
                Some("init-mem 0x100000000 1 => ok")),
            check!("kvm_gmem_populate()", "no guest_memfd slot at the GFN", EINVAL, ALL, "",
                "private 0x100000000 2M => ok\ninit-mem 0x200000000 1 => err EINVAL",
                Some("init-mem 0x100000000 1 => ok")),
            check!("__kvm_gmem_populate()", "the GFN is not PRIVATE", EINVAL, ALL, "",
                "init-mem 0x100000000 1 => err EINVAL", Some("private 0x100000000 4K => ok")),
            check!("kvm_gmem_populate()", "a page already added: an up-to-date folio (6.18)", EEXIST, &[Kernel::V6_18], "",
                "private 0x100000000 2M => ok\ninit-mem 0x100000000 1 => ok\ninit-mem 0x100000000 1 => err EEXIST",
                None),
            check!("kvm_tdp_mmu_map_private_pfn()", "a page already added: the map is spurious (7.3)", EIO, FROM_7_3, "",
                "private 0x100000000 2M => ok\ninit-mem 0x100000000 1 => ok\ninit-mem 0x100000000 1 => err EIO",
                None),
            check!("tdx_td_finalize()", "the TD is already finalized", EINVAL, ALL, "",
                "finalize => ok\nfinalize => err EINVAL", None),
        ],
        unreachable: &[
            "tdx_vcpu_init_mem_region(): a vCPU not initialized, flags other than MEASURE, a bad source address: the harness builds the TD",
            "tdx_td_finalize(): no measurement state or a module error: not modelled beyond SEAMCALL failures",
        ],
    },
];

impl Check {
    /// The kernels the row holds on.
    pub fn kernels(&self) -> Vec<Kernel> {
        if self.kernels.is_empty() {
            Kernel::ALL.to_vec()
        } else {
            self.kernels.to_vec()
        }
    }
}

/// The family: one scenario per row, `(file name, text)`.
pub fn family() -> Vec<(String, String)> {
    let mut v = Vec::new();
    for t in TABLES {
        for (i, c) in t.checks.iter().enumerate() {
            let mut o = format!(
                "# {}: {} ({}), {}. Generated from harness/src/model/argcheck.rs: edit the table, not this file.\n",
                t.ioctl,
                c.check,
                c.function,
                c.errno.name()
            );
            let (vm_line, rest) = match c.header.strip_prefix("vm ") {
                Some(_) => (c.header, ""),
                None => (t.header, c.header),
            };
            let mut lines = vm_line.lines();
            if let Some(first) = lines.next() {
                o.push_str(first);
                o.push('\n');
            }
            if !c.kernels.is_empty() {
                let names: Vec<&str> = c.kernels.iter().map(|k| k.name()).collect();
                o.push_str(&format!("kernel {}\n", names.join(" ")));
            }
            for l in lines.chain(rest.lines()) {
                o.push_str(l);
                o.push('\n');
            }
            o.push_str(c.hit);
            o.push('\n');
            if let Some(e) = c.edge {
                o.push_str(e);
                o.push('\n');
            }
            v.push((format!("{}-{:02}.seq", t.short, i + 1), o));
        }
    }
    v
}

/// The tables as Markdown, for `privmem argcheck`.
pub fn markdown() -> String {
    let mut o = String::new();
    for t in TABLES {
        o.push_str(&format!("## {}\n\n| # | function | check | errno | kernels |\n|---|---|---|---|---|\n", t.ioctl));
        for (i, c) in t.checks.iter().enumerate() {
            let k: Vec<&str> = c.kernels().iter().map(|k| k.name()).collect();
            o.push_str(&format!(
                "| {} | `{}` | {} | {} | {} |\n",
                i + 1,
                c.function,
                c.check,
                c.errno.name(),
                k.join(" ")
            ));
        }
        for u in t.unreachable {
            o.push_str(&format!("\nNot reachable from the language: {u}.\n"));
        }
        o.push('\n');
    }
    o
}
