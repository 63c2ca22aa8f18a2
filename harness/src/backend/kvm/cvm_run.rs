//! Issuing [`super::cvm::plan`] on a host that offers VM type 5 (TDX) or 4 (SNP), and running a
//! sequence's ops on that guest through the shim (`privmem_guest::x86_cvm`), whose image
//! (`backend::emulated::image`) it loads.
//!
//! Written against Linux 7.3's `vmx/tdx.c` and `svm/sev.c`, the layouts `tests/uapi_layout.rs`
//! checks, and the TDX module's ABI. The TDX part runs in the lab on KVM's real `tdx.c` over
//! privmem's software TDX module (`lab --tdx`, docs/tdx-lab.md); the SNP part is only compiled
//! (no machine here offers SNP). What it covers:
//! - TDX: the whole plan (CAPABILITIES, INIT_VM with the CPUID the capabilities allow and GPAW
//!   48, per-vCPU GET_CPUID/SET_CPUID2/INIT_VCPU, the image through INIT_MEM_REGION, FINALIZE)
//!   and the ops `finalize`, `init-mem`, `private`, `shared`, `punch`, `prefault`, host reads
//!   and writes,
//!   and every guest op (ACCEPT, MapGPA answered as `private_mem_conversions_test.c` does,
//!   reads and writes, #VE through the shim's handler).
//! - SNP: the set-up and launch (SEV_INIT2, LAUNCH_START, LAUNCH_UPDATE of the image,
//!   LAUNCH_FINISH) and the host ops; not guest ops: the shim's batch end is port I/O, which on
//!   SEV-SNP needs its GHCB page, not written yet.
//!
//! A memory fault ends a TD's case there: a TD's registers cannot be set to skip the access.

use super::cvm::*;
use crate::backend::emulated::{image, EncBits, Platform};
use crate::backend::mem::Mapping;
use crate::backend::RunError;
use crate::seq::*;
use kvm_bindings::{kvm_cpuid_entry2, kvm_create_guest_memfd, kvm_userspace_memory_region2, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use privmem_guest::abi::{BOOT_GPA, BOOT_SIZE, BOOT_SLOT, HARNESS_GPA, HARNESS_SIZE, HARNESS_SLOT};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Whether the runner issues `op` on a TD (or, `snp`, an SNP guest).
pub fn issues(op: &Op, snp: bool) -> bool {
    match op {
        Op::Finalize | Op::Private { .. } | Op::Shared { .. } | Op::Punch { .. } => true,
        Op::HostRead { .. } | Op::HostWrite { .. } | Op::Prefault { .. } => true,
        Op::ExpectPages { .. } | Op::ExpectSept { .. } => true,
        Op::InitMem { .. } | Op::TdxCmd(_) => !snp,
        // The lab's software TDX module injects it (its debugfs).
        Op::Inject(Fault::SeamcallBusy) => !snp && super::soft_tdx::present(),
        op if op.kind().is_guest() => !snp,
        _ => false,
    }
}

/// The ops the runner issues; a sequence with another is refused, naming it.
pub fn unsupported(seq: &Sequence) -> Option<String> {
    let snp = seq.header.vm == VmType::Snp;
    if snp && seq.has_groups() {
        return Some("concurrent groups on a real SNP guest (the runner runs them on TDs only)".into());
    }
    for st in &seq.steps {
        if !issues(&st.op, snp) {
            let why = if snp && st.op.kind().is_guest() {
                "SNP guest ops (the shim's GHCB page for its port I/O is not written)".to_string()
            } else {
                format!(
                    "`{}` on a real {} guest (the runner does not issue it yet)",
                    text::print_op(&st.op),
                    seq.header.vm.name()
                )
            };
            return Some(why);
        }
    }
    None
}

pub(super) struct Slot {
    pub(super) gpa: u64,
    pub(super) size: u64,
    pub(super) anon: Mapping,
    pub(super) gmem: Option<(usize, u64)>,
}

pub struct CvmGuest {
    pub(super) vm: VmFd,
    pub(super) vcpus: Vec<VcpuFd>,
    platform: Platform,
    /// The image's source contents (boot region, harness) and the harness slot's shared side.
    _image_fd: OwnedFd,
    _boot: Mapping,
    _harness: Mapping,
    pub(super) shared: Mapping,
    pub(super) gmems: Vec<OwnedFd>,
    pub(super) slots: BTreeMap<u32, Slot>,
    sev: Option<std::fs::File>,
    pub(super) finalized: bool,
    /// The ranges the case made private or shared (its ops, the guest's MapGPA), which a TD's
    /// reset sets back to shared.
    pub(super) attrs_set: Vec<(u64, u64)>,
    /// The GFNs the case made private and left so (its ops, the guest's MapGPA): where a leaf
    /// of the kernel's mapping view is a mirror-root leaf.
    pub(super) private_gfns: super::soft_tdx::Sides,
    /// The TD's TDR in the lab's software TDX module, whose dumps name TDs by it.
    pub(super) soft_tdr: Option<u64>,
}

fn setup(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> RunError {
    move |e| RunError::ioctl(what, e.errno())
}

/// `KVM_MEMORY_ENCRYPT_OP` on a vCPU fd (kvm-ioctls has it on the VM fd only).
pub(super) fn vcpu_encrypt_op<T>(vcpu: &VcpuFd, cmd: &mut T) -> Result<(), i32> {
    let nr = IOCTLS.iter().find(|(n, _)| *n == "KVM_MEMORY_ENCRYPT_OP").map(|(_, v)| *v).expect("listed");
    // SAFETY: `cmd` is a properly laid out command the kernel reads and writes.
    let r = unsafe { libc::ioctl(vcpu.as_raw_fd(), nr as _, cmd as *mut T) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
    } else {
        Ok(())
    }
}

/// A TD vCPU's CPUID as the TD has it (KVM_TDX_GET_CPUID), set as its KVM CPUID
/// (KVM_SET_CPUID2): what the build does before INIT_VCPU.
fn td_cpuid(vcpu: &VcpuFd) -> Result<(), RunError> {
    let mut buf = with_cpuid(0);
    let mut cmd = KvmTdxCmd { id: KVM_TDX_GET_CPUID, data: buf.as_mut_ptr() as u64, ..Default::default() };
    vcpu_encrypt_op(vcpu, &mut cmd).map_err(|e| RunError::ioctl("KVM_TDX_GET_CPUID", e))?;
    let cpuid = kvm_bindings::CpuId::from_entries(entries(&mut buf, 0))
        .map_err(|e| RunError::Setup(format!("CPUID: {e:?}")))?;
    vcpu.set_cpuid2(&cpuid).map_err(setup("KVM_SET_CPUID2"))
}

/// A `struct kvm_cpuid2` with room for [`KVM_MAX_CPUID_ENTRIES`] entries, behind a header of
/// `head` bytes (the TDX structs end in one), as 8-byte words.
fn with_cpuid(head: usize) -> Vec<u64> {
    let n = (head + 8 + KVM_MAX_CPUID_ENTRIES * std::mem::size_of::<kvm_cpuid_entry2>()).div_ceil(8);
    let mut v = vec![0u64; n];
    v[head / 8] = KVM_MAX_CPUID_ENTRIES as u64; // nent (u32) and padding
    v
}

/// The entries the kernel wrote (its `nent`, at most the room).
fn entries(buf: &mut [u64], head: usize) -> &mut [kvm_cpuid_entry2] {
    let nent = ((buf[head / 8] & 0xffff_ffff) as usize).min(KVM_MAX_CPUID_ENTRIES);
    &mut entries_at(buf, head)[..nent]
}

impl CvmGuest {
    pub fn build(kvm: &Kvm, seq: &Sequence) -> Result<CvmGuest, RunError> {
        Self::build_with(kvm, seq, seq.header.vcpus.max(1))
    }

    /// `build` with `vcpus` vCPUs (at least the sequence's: a TD kept for later cases gets
    /// room for theirs; the ones a case does not name stay idle).
    pub(super) fn build_with(kvm: &Kvm, seq: &Sequence, vcpus: u32) -> Result<CvmGuest, RunError> {
        let h = &seq.header;
        let platform = if h.vm == VmType::Tdx { Platform::Td } else { Platform::Snp };
        let td = platform == Platform::Td;
        let vm = kvm.create_vm_with_type(h.vm.kvm_type()).map_err(setup("KVM_CREATE_VM"))?;
        let mut soft_tdr = None;
        let mut sev = None;
        let enable = |cap: u32, arg: u64| {
            let c = kvm_bindings::kvm_enable_cap { cap, args: [arg, 0, 0, 0], ..Default::default() };
            vm.enable_cap(&c)
        };
        if td {
            enable(KVM_CAP_SPLIT_IRQCHIP, 24).map_err(setup("KVM_CAP_SPLIT_IRQCHIP"))?;
            // The software TDX module names TDs by their TDR: this one's is the TD it did not
            // have before KVM_TDX_INIT_VM (TDH.MNG.CREATE).
            let before = super::soft_tdx::tds();
            Self::tdx_init_vm(kvm, &vm)?;
            soft_tdr = before.and_then(|b| super::soft_tdx::tds()?.difference(&b).next().copied());
        } else {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/sev")
                .map_err(|e| RunError::Setup(format!("/dev/sev: {e}")))?;
            let mut init = kvm_bindings::kvm_sev_init { ghcb_version: 2, ..Default::default() };
            let mut cmd = kvm_bindings::kvm_sev_cmd {
                id: KVM_SEV_INIT2,
                data: &mut init as *mut _ as u64,
                sev_fd: f.as_raw_fd() as u32,
                ..Default::default()
            };
            vm.encrypt_op_sev(&mut cmd).map_err(setup("KVM_SEV_INIT2"))?;
            sev = Some(f);
        }
        enable(KVM_CAP_EXIT_HYPERCALL, 1 << KVM_HC_MAP_GPA_RANGE).map_err(setup("KVM_CAP_EXIT_HYPERCALL"))?;
        // The image: its source contents, one guest_memfd for its private regions, the
        // harness slot's shared side from userspace memory.
        let mm = |n: u64| Mapping::anon(n as usize).map_err(|e| RunError::Setup(format!("mmap: {e}")));
        let (boot, harness, shared) = (mm(BOOT_SIZE)?, mm(HARNESS_SIZE)?, mm(HARNESS_SIZE)?);
        let bits = if td {
            EncBits { shared_bit: crate::model::tdx::TD_SHARED_BIT, c_bit: 0 }
        } else {
            // CPUID 0x8000001F EBX[5:0]: the C-bit's position.
            let cbit = std::arch::x86_64::__cpuid(0x8000_001f).ebx & 0x3f;
            EncBits { shared_bit: 0, c_bit: 1 << cbit }
        };
        // 1G pages: every TDX and SNP host has them.
        image::build_boot(&boot, &harness, bits, true);
        image::build_harness(&harness, platform);
        let gmem = |vm: &VmFd, size: u64| {
            vm.create_guest_memfd(kvm_create_guest_memfd { size, ..Default::default() })
                // SAFETY: the kernel just handed us this fd.
                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let image_fd = gmem(&vm, BOOT_SIZE + HARNESS_SIZE).map_err(setup("KVM_CREATE_GUEST_MEMFD (image)"))?;
        let region = |slot: u32, gpa: u64, size: u64, uaddr: u64, fd: u32, off: u64| kvm_userspace_memory_region2 {
            slot,
            flags: kvm_bindings::KVM_MEM_GUEST_MEMFD,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: uaddr,
            guest_memfd: fd,
            guest_memfd_offset: off,
            ..Default::default()
        };
        let fd = image_fd.as_raw_fd() as u32;
        for r in [
            region(BOOT_SLOT, BOOT_GPA, BOOT_SIZE, 0, fd, 0),
            region(HARNESS_SLOT, HARNESS_GPA, HARNESS_SIZE, shared.addr(), fd, BOOT_SIZE),
        ] {
            // SAFETY: the memory behind the slot lives in the returned CvmGuest.
            unsafe { vm.set_user_memory_region2(r) }.map_err(setup("KVM_SET_USER_MEMORY_REGION2 (image)"))?;
        }
        let mut g = CvmGuest {
            vm,
            vcpus: Vec::new(),
            platform,
            _image_fd: image_fd,
            _boot: boot,
            _harness: harness,
            shared,
            gmems: Vec::new(),
            slots: BTreeMap::new(),
            sev,
            finalized: false,
            attrs_set: Vec::new(),
            private_gfns: Default::default(),
            soft_tdr,
        };
        g.attach(h)?;
        for (_, gpa, size) in IMAGE_PRIVATE {
            let a = kvm_bindings::kvm_memory_attributes { address: gpa, size, attributes: 1 << 3, flags: 0 };
            g.vm.set_memory_attributes(a).map_err(|e| RunError::ioctl("KVM_SET_MEMORY_ATTRIBUTES", e.errno()))?;
        }
        let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(setup("KVM_GET_SUPPORTED_CPUID"))?;
        for i in 0..vcpus.max(h.vcpus).max(1) {
            let vcpu = g.vm.create_vcpu(i as u64).map_err(setup("KVM_CREATE_VCPU"))?;
            if td {
                td_cpuid(&vcpu)?;
                let mut cmd = KvmTdxCmd { id: KVM_TDX_INIT_VCPU, ..Default::default() };
                vcpu_encrypt_op(&vcpu, &mut cmd).map_err(|e| RunError::ioctl("KVM_TDX_INIT_VCPU", e))?;
            } else {
                vcpu.set_cpuid2(&supported).map_err(setup("KVM_SET_CPUID2"))?;
                crate::backend::emulated::initial_state(&vcpu, Platform::Snp, i as u64)
                    .map_err(|e| RunError::Setup(format!("vCPU state: {e}")))?;
            }
            g.vcpus.push(vcpu);
        }
        // No implicit FINALIZE: a sequence's TD stays in its build until its own `finalize`,
        // as the model's does (KVM_RUN before it is EINVAL; INIT_MEM_REGION after it too).
        g.load_image()?;
        Ok(g)
    }

    /// A sequence's guest_memfd files and slots (its header's), on a TD being built or one
    /// reused from an earlier case.
    pub(super) fn attach(&mut self, h: &Header) -> Result<(), RunError> {
        for d in &h.gmems {
            let fd = self
                .vm
                .create_guest_memfd(kvm_create_guest_memfd { size: d.size, ..Default::default() })
                .map_err(setup("KVM_CREATE_GUEST_MEMFD"))?;
            // SAFETY: the kernel just handed us this fd.
            self.gmems.push(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        for s in &h.slots {
            let anon = Mapping::anon(s.size.max(PAGE) as usize).map_err(|e| RunError::Setup(format!("mmap: {e}")))?;
            let gm = s.gmem.as_ref().and_then(|b| h.gmems.iter().position(|d| d.name == b.gmem).map(|i| (i, b.offset)));
            let (fd, off) = gm.map(|(i, o)| (self.gmems[i].as_raw_fd() as u32, o)).unwrap_or((0, 0));
            let r = kvm_userspace_memory_region2 {
                slot: s.id,
                flags: if gm.is_some() { kvm_bindings::KVM_MEM_GUEST_MEMFD } else { 0 },
                guest_phys_addr: s.gpa,
                memory_size: s.size,
                userspace_addr: anon.addr(),
                guest_memfd: fd,
                guest_memfd_offset: off,
                ..Default::default()
            };
            // SAFETY: the memory behind the slot lives in `self.slots` until the slot is deleted.
            unsafe { self.vm.set_user_memory_region2(r) }.map_err(setup("KVM_SET_USER_MEMORY_REGION2"))?;
            self.slots.insert(s.id, Slot { gpa: s.gpa, size: s.size, anon, gmem: gm });
        }
        Ok(())
    }

    /// Take a case's memory off the TD so another case can have it: delete its slots (KVM
    /// zaps their S-EPT leaves through BLOCK, TRACK and REMOVE, and their shared EPT leaves),
    /// close its files, set what it converted back to shared. Whether that left the TD as the
    /// next case needs it is for the caller to prove (`td_reuse`).
    pub(super) fn detach(&mut self) -> Result<(), String> {
        let mut first_err = None;
        for (&id, _) in self.slots.iter() {
            let r = kvm_userspace_memory_region2 { slot: id, ..Default::default() };
            // SAFETY: deleting a slot; no memory is handed to KVM.
            if let Err(e) = unsafe { self.vm.set_user_memory_region2(r) } {
                first_err.get_or_insert(format!("deleting slot {id}: {e}"));
            }
        }
        self.slots.clear();
        self.gmems.clear();
        self.private_gfns = super::soft_tdx::Sides::default();
        for (address, size) in std::mem::take(&mut self.attrs_set) {
            let a = kvm_bindings::kvm_memory_attributes { address, size, attributes: 0, flags: 0 };
            if let Err(e) = self.vm.set_memory_attributes(a) {
                first_err.get_or_insert(format!("attributes of {address:#x}+{size:#x} back to shared: {e}"));
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// KVM_TDX_CAPABILITIES, then KVM_TDX_INIT_VM with the CPUID the capabilities allow
    /// (each configurable leaf as KVM supports it, masked by what the module lets the VMM
    /// configure), XFAM within the supported set, no attributes (so that a pending page gives
    /// the guest #VE, which the shim handles), and a 48-bit guest physical address width.
    fn tdx_init_vm(kvm: &Kvm, vm: &VmFd) -> Result<(), RunError> {
        let mut init = Self::init_vm_arg(kvm, vm)?;
        let mut cmd = KvmTdxCmd { id: KVM_TDX_INIT_VM, data: init.as_mut_ptr() as u64, ..Default::default() };
        // SAFETY: the command points at a buffer laid out as struct kvm_tdx_init_vm.
        unsafe { vm.encrypt_op(&mut cmd) }.map_err(setup("KVM_TDX_INIT_VM"))
    }

    /// The `struct kvm_tdx_init_vm` [`Self::tdx_init_vm`] passes, as 8-byte words.
    fn init_vm_arg(kvm: &Kvm, vm: &VmFd) -> Result<Vec<u64>, RunError> {
        let caps_head = std::mem::offset_of!(KvmTdxCapabilities, cpuid);
        let mut caps = with_cpuid(caps_head);
        let mut cmd = KvmTdxCmd { id: KVM_TDX_CAPABILITIES, data: caps.as_mut_ptr() as u64, ..Default::default() };
        // SAFETY: the command points at a buffer laid out as struct kvm_tdx_capabilities.
        unsafe { vm.encrypt_op(&mut cmd) }.map_err(setup("KVM_TDX_CAPABILITIES"))?;
        let supported_xfam = caps[1];
        let allowed: Vec<kvm_cpuid_entry2> = entries(&mut caps, caps_head).to_vec();
        let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(setup("KVM_GET_SUPPORTED_CPUID"))?;
        let head = std::mem::offset_of!(KvmTdxInitVm, cpuid);
        let mut init = with_cpuid(head);
        let mut n = 0;
        for a in &allowed {
            let Some(s) = supported.as_slice().iter().find(|e| e.function == a.function && e.index == a.index) else {
                continue;
            };
            let mut e = *s;
            (e.eax, e.ebx, e.ecx, e.edx) = (e.eax & a.eax, e.ebx & a.ebx, e.ecx & a.ecx, e.edx & a.edx);
            if e.function == 0x8000_0008 {
                e.eax = (e.eax & !0x00ff_0000) | (48 << 16);
            }
            entries_at(&mut init, head)[n] = e;
            n += 1;
        }
        init[head / 8] = n as u64;
        let xsave = |i: u32| supported.as_slice().iter().find(|e| e.function == 0xd && e.index == i).copied();
        let xcr0 = xsave(0).map(|e| e.eax as u64 | (e.edx as u64) << 32).unwrap_or(3);
        let xss = xsave(1).map(|e| e.ecx as u64 | (e.edx as u64) << 32).unwrap_or(0);
        init[1] = supported_xfam & (xcr0 | xss); // xfam; attributes (word 0) stay 0
        Ok(init)
    }

    /// `tdx-cmd`: the command as the build issues it but for the fields the op writes out, on
    /// the case's TD or on a TD of its own (created here, destroyed on return; a step of its
    /// set-up failing is the harness's error, not the op's outcome).
    pub(super) fn tdx_cmd(&self, c: &TdxCmd) -> Result<Outcome, RunError> {
        let kvm = Kvm::new().map_err(setup("open /dev/kvm"))?;
        let own;
        let vm = if c.new_td {
            own = kvm.create_vm_with_type(VmType::Tdx.kvm_type()).map_err(setup("KVM_CREATE_VM (new TD)"))?;
            &own
        } else {
            &self.vm
        };
        let mut own_vcpus = Vec::new();
        if c.new_td {
            // As the build: a TD's vCPUs need the in-kernel local APIC (x2APIC).
            let cap =
                kvm_bindings::kvm_enable_cap { cap: KVM_CAP_SPLIT_IRQCHIP, args: [24, 0, 0, 0], ..Default::default() };
            vm.enable_cap(&cap).map_err(setup("KVM_CAP_SPLIT_IRQCHIP (new TD)"))?;
        }
        if let (true, Some(v)) = (c.new_td, c.vcpu) {
            Self::tdx_init_vm(&kvm, vm)?;
            for i in 0..=v {
                let vcpu = vm.create_vcpu(i as u64).map_err(setup("KVM_CREATE_VCPU (new TD)"))?;
                td_cpuid(&vcpu)?;
                own_vcpus.push(vcpu);
            }
        }
        let set_nent = |buf: &mut [u64], head: usize| {
            if let Some(n) = c.nent {
                buf[head / 8] = (buf[head / 8] & !0xffff_ffff) | n as u64;
            }
        };
        let mut buf = match c.id {
            KVM_TDX_CAPABILITIES => {
                let head = std::mem::offset_of!(KvmTdxCapabilities, cpuid);
                let mut b = with_cpuid(head);
                set_nent(&mut b, head);
                b
            }
            KVM_TDX_INIT_VM if c.vcpu.is_none() => {
                let head = std::mem::offset_of!(KvmTdxInitVm, cpuid);
                let mut b = Self::init_vm_arg(&kvm, vm)?;
                b[0] = c.attrs;
                b[1] |= (c.bad_xfam as u64) << 63;
                b[std::mem::offset_of!(KvmTdxInitVm, reserved) / 8] = c.reserved as u64;
                b[head / 8] |= (c.padding as u64) << 32;
                if let Some(w) = c.gpaw {
                    let n = (b[head / 8] & 0xffff_ffff) as usize;
                    for e in entries_at(&mut b, head)[..n].iter_mut().filter(|e| e.function == 0x8000_0008) {
                        e.eax = (e.eax & !0x00ff_0000) | (w as u32) << 16;
                    }
                }
                set_nent(&mut b, head);
                b
            }
            KVM_TDX_GET_CPUID => {
                let mut b = with_cpuid(0);
                set_nent(&mut b, 0);
                b
            }
            _ => Vec::new(),
        };
        let data = if buf.is_empty() { 0 } else { buf.as_mut_ptr() as u64 };
        let mut cmd = KvmTdxCmd { id: c.id, flags: c.flags, data, hw_error: c.hw_error };
        let r = match c.vcpu {
            // SAFETY: `data` is 0 or a buffer laid out as the command's struct, with room for
            // KVM_MAX_CPUID_ENTRIES entries whatever nent says.
            None => unsafe { vm.encrypt_op(&mut cmd) }.map_err(|e| e.errno()),
            Some(v) => {
                let vcpus = if c.new_td { &own_vcpus } else { &self.vcpus };
                let vcpu = vcpus.get(v as usize).ok_or_else(|| RunError::Setup(format!("tdx-cmd: no vCPU {v}")))?;
                vcpu_encrypt_op(vcpu, &mut cmd)
            }
        };
        Ok(r.map_or_else(|e| Outcome::Err(Errno::from_raw(e)), |()| Outcome::Ok))
    }

    /// The image into the guest's private memory: INIT_MEM_REGION (measured) on a TD,
    /// LAUNCH_START and LAUNCH_UPDATE on SNP.
    fn load_image(&mut self) -> Result<(), RunError> {
        let src = |gpa: u64| if gpa == BOOT_GPA { self._boot.addr() } else { self._harness.addr() };
        if self.platform == Platform::Td {
            for (_, gpa, size) in IMAGE_PRIVATE {
                let mut r = KvmTdxInitMemRegion { source_addr: src(gpa), gpa, nr_pages: size / PAGE };
                let mut cmd = KvmTdxCmd {
                    id: KVM_TDX_INIT_MEM_REGION,
                    flags: KVM_TDX_MEASURE_MEMORY_REGION,
                    data: &mut r as *mut _ as u64,
                    ..Default::default()
                };
                vcpu_encrypt_op(&self.vcpus[0], &mut cmd).map_err(|e| RunError::ioctl("KVM_TDX_INIT_MEM_REGION", e))?;
            }
            return Ok(());
        }
        let mut start = kvm_bindings::kvm_sev_snp_launch_start { policy: 0x30000, ..Default::default() };
        self.sev_op(KVM_SEV_SNP_LAUNCH_START, &mut start).map_err(setup("KVM_SEV_SNP_LAUNCH_START"))?;
        for (_, gpa, size) in IMAGE_PRIVATE {
            let mut u = kvm_bindings::kvm_sev_snp_launch_update {
                gfn_start: gpa / PAGE,
                uaddr: src(gpa),
                len: size,
                type_: KVM_SEV_SNP_PAGE_TYPE_NORMAL,
                ..Default::default()
            };
            self.sev_op(KVM_SEV_SNP_LAUNCH_UPDATE, &mut u).map_err(setup("KVM_SEV_SNP_LAUNCH_UPDATE"))?;
        }
        Ok(())
    }

    fn sev_op<T>(&self, id: u32, data: &mut T) -> Result<(), kvm_ioctls::Error> {
        let mut cmd = kvm_bindings::kvm_sev_cmd {
            id,
            data: data as *mut T as u64,
            sev_fd: self.sev.as_ref().map(|f| f.as_raw_fd() as u32).unwrap_or(0),
            ..Default::default()
        };
        self.vm.encrypt_op_sev(&mut cmd)
    }

    /// KVM_TDX_FINALIZE_VM or SNP_LAUNCH_FINISH.
    pub(super) fn finalize(&mut self) -> Result<(), i32> {
        let r = if self.platform == Platform::Td {
            let mut cmd = KvmTdxCmd { id: KVM_TDX_FINALIZE_VM, ..Default::default() };
            // SAFETY: a command without data.
            unsafe { self.vm.encrypt_op(&mut cmd) }
        } else {
            let mut f = kvm_bindings::kvm_sev_snp_launch_finish::default();
            self.sev_op(KVM_SEV_SNP_LAUNCH_FINISH, &mut f)
        };
        self.finalized |= r.is_ok();
        r.map_err(|e| e.errno())
    }
}

/// The room for entries after a `with_cpuid` buffer's header.
fn entries_at(buf: &mut [u64], head: usize) -> &mut [kvm_cpuid_entry2] {
    // SAFETY: `with_cpuid` sized the buffer for KVM_MAX_CPUID_ENTRIES entries after the
    // header and its nent word.
    unsafe {
        std::slice::from_raw_parts_mut(
            (buf.as_mut_ptr() as *mut u8).add(head + 8) as *mut kvm_cpuid_entry2,
            KVM_MAX_CPUID_ENTRIES,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::unsupported;
    use crate::seq::{text::parse, VmType};

    /// What the runner would issue on a TD or SNP host, by corpus scenario: every TDX one whose
    /// ops it knows, and the SNP ones without guest ops; each refusal names its op.
    #[test]
    fn the_runner_names_what_it_does_not_issue() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
        let (mut taken, mut refused) = (Vec::new(), Vec::new());
        for f in crate::corpus::seq_files(&root) {
            let s = parse("s", &std::fs::read_to_string(&f).unwrap()).unwrap();
            if !matches!(s.header.vm, VmType::Tdx | VmType::Snp) {
                continue;
            }
            match unsupported(&s) {
                None => taken.push(f),
                Some(why) => {
                    assert!(why.contains('`') || why.contains("GHCB"), "{}: {why}", f.display());
                    if s.header.vm == VmType::Snp {
                        assert!(why.contains("GHCB") || !s.steps.iter().any(|st| st.op.kind().is_guest()));
                    }
                    refused.push(f)
                }
            }
        }
        eprintln!("real TD/SNP runner: {} scenarios taken, {} refused", taken.len(), refused.len());
        assert!(taken.len() >= 15, "{taken:?}");
    }
}
