//! The lab's software TDX module (`ci/lab/tdx/module/seam.c`), linked into privmem from the same
//! source the lab's TDX kernel builds in (`build.rs`), on a simulated physical memory. It is
//! here so that privmem can hold it to its own model of the module (`model/sept/`): the
//! differential in [`diff`] runs the same SEAMCALL sequence on both and compares every status
//! and every S-EPT entry (docs/tdx-lab.md, "One source of truth").

pub mod diff;

use std::collections::HashMap;
use std::ffi::c_void;

/// `struct seam_regs` / Linux's `struct tdx_module_args`: every register a SEAMCALL uses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub rcx: u64,
    pub rdx: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rbx: u64,
    pub rdi: u64,
    pub rsi: u64,
}

#[repr(C)]
struct Env {
    ctx: *mut c_void,
    page: extern "C" fn(*mut c_void, u64) -> *mut c_void,
    cpu: extern "C" fn(*mut c_void) -> u32,
    owned: Option<extern "C" fn(*mut c_void, u64, bool)>,
    /// The guest running with the module's lock let go: here, the test's hook
    /// ([`SoftModule::while_inside`]) stands for the other logical processors.
    guest_runs: Option<extern "C" fn(*mut c_void, u32) -> bool>,
}

type LeafFn = extern "C" fn(*mut c_void, u64, i32, u32, u64);

extern "C" {
    fn seam_size() -> std::ffi::c_ulong;
    fn seam_init(m: *mut c_void, env: *const Env, flags: u32);
    fn seam_call(m: *mut c_void, rax: u64, r: *mut Regs) -> u64;
    fn seam_sept_leaves(m: *mut c_void, tdr: u64, cb: LeafFn, ctx: *mut c_void);
    fn seam_page_type(m: *mut c_void, pa: u64, owner: *mut u64) -> i32;
    fn seam_guest_accept(m: *mut c_void, tdr: u64, gpa: u64, level: i32, exit: *mut bool) -> u64;
    fn seam_set_run_on(m: *mut c_void, us: u32);
    fn seam_contention(m: *mut c_void, out: *mut u64);
}

/// Leaf numbers (RAX bits 15:0), as `seam.h` and Linux's `arch/x86/virt/vmx/tdx/tdx.h` have them.
pub mod leaf {
    pub const VP_ENTER: u64 = 0;
    pub const MNG_ADDCX: u64 = 1;
    pub const MEM_PAGE_ADD: u64 = 2;
    pub const MEM_SEPT_ADD: u64 = 3;
    pub const VP_ADDCX: u64 = 4;
    pub const MEM_PAGE_AUG: u64 = 6;
    pub const MEM_RANGE_BLOCK: u64 = 7;
    pub const MNG_KEY_CONFIG: u64 = 8;
    pub const MNG_CREATE: u64 = 9;
    pub const VP_CREATE: u64 = 10;
    pub const MEM_PAGE_DEMOTE: u64 = 15;
    pub const MR_EXTEND: u64 = 16;
    pub const MR_FINALIZE: u64 = 17;
    pub const VP_FLUSH: u64 = 18;
    pub const MNG_VPFLUSHDONE: u64 = 19;
    pub const MNG_KEY_FREEID: u64 = 20;
    pub const MNG_INIT: u64 = 21;
    pub const VP_INIT: u64 = 22 | 1 << 16;
    pub const MEM_PAGE_PROMOTE: u64 = 23;
    pub const PHYMEM_PAGE_RECLAIM: u64 = 28;
    pub const MEM_PAGE_REMOVE: u64 = 29;
    pub const SYS_KEY_CONFIG: u64 = 31;
    pub const SYS_INIT: u64 = 33;
    pub const SYS_RD: u64 = 34;
    pub const SYS_LP_INIT: u64 = 35;
    pub const SYS_TDMR_INIT: u64 = 36;
    pub const MEM_TRACK: u64 = 38;
    pub const VP_WR: u64 = 43;
    pub const SYS_CONFIG: u64 = 45;
}

/// `SEAM_F_HUGE_PAGES`: 2M AUG, DEMOTE and PROMOTE (the huge-page series' interface).
pub const F_HUGE_PAGES: u32 = 1;
/// `SEAM_F_ENHANCED_DEMOTE`: TDX_FEATURES0 bit 51, DEMOTE never interrupted.
pub const F_ENHANCED_DEMOTE: u32 = 2;
const PAGE: u64 = 4096;

/// Simulated physical memory: pages made on first touch, below `limit`. It is also the
/// environment's context, so it carries what the guest-runs callback needs.
struct Memory {
    pages: HashMap<u64, Box<[u64; 512]>>,
    limit: u64,
    /// The module's state, for SEAMCALLs made while a vCPU is inside (the hook's).
    seam: *mut c_void,
    inside: Option<InsideHook>,
    /// A panic of the hook, re-raised once the SEAMCALL is back in Rust (unwinding through
    /// the C frames would abort).
    panicked: Option<Box<dyn std::any::Any + Send>>,
}

/// What "other logical processors" do while a vCPU's guest runs with the module's lock let go:
/// `(us, other)`, the run's length and the other processors' SEAMCALLs; true if an interrupt
/// for the vCPU's processor is then pending.
pub type InsideHook = Box<dyn FnMut(u32, &mut Inside) -> bool>;

/// SEAMCALLs from another logical processor while a vCPU is inside the TD (re-entering the
/// module, as the lab kernel's other CPUs do while the lock is let go).
pub struct Inside {
    seam: *mut c_void,
}

impl Inside {
    pub fn call(&mut self, rax: u64, r: &mut Regs) -> u64 {
        // SAFETY: the module state outlives the VP.ENTER that called the hook; the module is
        // written for this re-entry (its lock is let go in guest_runs).
        unsafe { seam_call(self.seam, rax, r) }
    }
}

extern "C" fn env_guest_runs(ctx: *mut c_void, us: u32) -> bool {
    // SAFETY: `ctx` is the boxed `Memory`; no reference to it is held across the hook, which
    // re-enters the module (and so env_page).
    let (hook, seam) = unsafe {
        let mem = &mut *(ctx as *mut Memory);
        (mem.inside.take(), mem.seam)
    };
    let Some(mut hook) = hook else { return false };
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(us, &mut Inside { seam })));
    // SAFETY: as above; the hook is done.
    let mem = unsafe { &mut *(ctx as *mut Memory) };
    mem.inside = Some(hook);
    match run {
        Ok(irq) => irq,
        Err(p) => {
            mem.panicked = Some(p);
            false
        }
    }
}

extern "C" fn env_page(ctx: *mut c_void, pa: u64) -> *mut c_void {
    // SAFETY: `ctx` is the `Memory` the owning `SoftModule` boxed and keeps alive for as long as
    // the module can call back (the module is only called through `&mut SoftModule`).
    let mem = unsafe { &mut *(ctx as *mut Memory) };
    if !pa.is_multiple_of(PAGE) || pa >= mem.limit {
        return std::ptr::null_mut();
    }
    mem.pages.entry(pa).or_insert_with(|| Box::new([0; 512])).as_mut_ptr() as *mut c_void
}

extern "C" fn env_cpu(_: *mut c_void) -> u32 {
    0
}

extern "C" fn leaf_cb(ctx: *mut c_void, gpa: u64, level: i32, state: u32, pa: u64) {
    // SAFETY: `ctx` is the `Vec` `sept` passes for the duration of the walk.
    let v = unsafe { &mut *(ctx as *mut Vec<SeptEntry>) };
    v.push(SeptEntry { gpa, level: level as u8, state: state as u8, pa });
}

/// What the guest's TDG.MEM.PAGE.ACCEPT did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestAccept {
    /// Returned to the guest with this RAX.
    Rax(u64),
    /// An EPT violation to the host (KVM maps and the guest retries).
    Exit,
}

/// One present S-EPT entry as the module holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeptEntry {
    pub gpa: u64,
    pub level: u8,
    pub state: u8,
    pub pa: u64,
}

/// The module core on its own memory, booted (SYS.INIT to TDMR.INIT) as the kernel boots it.
pub struct SoftModule {
    state: Vec<u64>,
    mem: Box<Memory>,
    next_page: u64,
    /// The memory the one TDMR covers; pages for TDs come from below its PAMT.
    pub tdmr_size: u64,
}

impl SoftModule {
    /// A module over `mem_gib` GiB of memory, booted: one TDMR over all of it, its PAMT at the
    /// top, the global KeyID 32.
    pub fn boot(mem_gib: u64, flags: u32) -> Result<SoftModule, String> {
        // SAFETY: a pure function of the C module.
        let words = (unsafe { seam_size() } as usize).div_ceil(8);
        let limit = mem_gib << 30;
        let mut m = SoftModule {
            state: vec![0; words],
            mem: Box::new(Memory {
                pages: HashMap::new(),
                limit,
                seam: std::ptr::null_mut(),
                inside: None,
                panicked: None,
            }),
            next_page: 1 << 20,
            tdmr_size: limit,
        };
        m.mem.seam = m.state.as_mut_ptr() as *mut c_void;
        let env = Env {
            ctx: &mut *m.mem as *mut Memory as *mut c_void,
            page: env_page,
            cpu: env_cpu,
            owned: None,
            guest_runs: Some(env_guest_runs),
        };
        // SAFETY: `state` has seam_size() bytes, 8-aligned; `env` is copied by the callee.
        unsafe { seam_init(m.state.as_mut_ptr() as *mut c_void, &env, flags) };
        m.ok(leaf::SYS_INIT, &mut Regs::default(), "SYS.INIT")?;
        m.ok(leaf::SYS_LP_INIT, &mut Regs::default(), "SYS.LP.INIT")?;
        // The PAMT: 16 bytes per 4K page, at the top of memory.
        let pamt_size = (limit / PAGE * 16).next_multiple_of(PAGE);
        let pamt = limit - pamt_size;
        let info = m.alloc();
        let list = m.alloc();
        m.write(info, &[0, limit, 0, 0, 0, 0, pamt, pamt_size]);
        m.write(list, &[info]);
        m.ok(leaf::SYS_CONFIG, &mut Regs { rcx: list, rdx: 1, r8: 32, ..Default::default() }, "SYS.CONFIG")?;
        m.ok(leaf::SYS_KEY_CONFIG, &mut Regs::default(), "SYS.KEY.CONFIG")?;
        loop {
            let mut r = Regs { rcx: 0, ..Default::default() };
            m.ok(leaf::SYS_TDMR_INIT, &mut r, "SYS.TDMR.INIT")?;
            if r.rdx >= limit {
                break;
            }
        }
        // Pages the boot used stay the host's; TD pages start after them.
        Ok(m)
    }

    fn ptr(&mut self) -> *mut c_void {
        self.state.as_mut_ptr() as *mut c_void
    }

    /// One SEAMCALL.
    pub fn call(&mut self, rax: u64, r: &mut Regs) -> u64 {
        let p = self.ptr();
        // SAFETY: the module state is initialized; `r` is a live, properly laid out struct.
        let st = unsafe { seam_call(p, rax, r) };
        if let Some(panic) = self.mem.panicked.take() {
            std::panic::resume_unwind(panic);
        }
        st
    }

    fn ok(&mut self, rax: u64, r: &mut Regs, what: &str) -> Result<(), String> {
        match self.call(rax, r) {
            0 => Ok(()),
            st => Err(format!("{what}: status {st:#018x}")),
        }
    }

    /// A fresh host page (never handed out before).
    pub fn alloc(&mut self) -> u64 {
        let pa = self.next_page;
        self.next_page += PAGE;
        pa
    }

    /// `n` contiguous fresh pages aligned to `n` pages (a 2M page: 512).
    pub fn alloc_aligned(&mut self, n: u64) -> u64 {
        self.next_page = self.next_page.next_multiple_of(n * PAGE);
        let pa = self.next_page;
        self.next_page += n * PAGE;
        pa
    }

    /// The word at physical address `pa` in simulated memory (the test's own accesses).
    fn word(&mut self, pa: u64) -> *mut u64 {
        let p = env_page(&mut *self.mem as *mut Memory as *mut c_void, pa & !(PAGE - 1)) as *mut u64;
        assert!(!p.is_null(), "outside memory at {pa:#x}");
        // SAFETY: within the page's 512 words.
        unsafe { p.add((pa % PAGE / 8) as usize) }
    }

    /// Write words at physical address `pa`.
    pub fn write(&mut self, pa: u64, words: &[u64]) {
        let p = self.word(pa);
        for (i, w) in words.iter().enumerate() {
            // SAFETY: the page has 512 words; the callers write within one page.
            unsafe { *p.add(i) = *w };
        }
    }

    /// Every present S-EPT entry at 1G and below of the TD at `tdr`, in GPA order.
    pub fn sept(&mut self, tdr: u64) -> Vec<SeptEntry> {
        let mut v: Vec<SeptEntry> = Vec::new();
        let p = self.ptr();
        // SAFETY: `v` lives across the call; the callback only pushes to it.
        unsafe { seam_sept_leaves(p, tdr, leaf_cb, &mut v as *mut Vec<SeptEntry> as *mut c_void) };
        v.sort();
        v
    }

    /// Let a vCPU's guest run on with the module's lock let go (`run_on`, µs; 0: never), and
    /// what other logical processors do meanwhile (`hook`).
    pub fn while_inside(&mut self, us: u32, hook: Option<InsideHook>) {
        self.mem.inside = hook;
        let p = self.ptr();
        // SAFETY: a plain store into the module's state.
        unsafe { seam_set_run_on(p, us) };
    }

    /// The module's contention counters: host S-EPT SEAMCALLs that met a vCPU inside, BUSY on
    /// an ACCEPT's entry, ACCEPTs that yielded to host priority, TRACKs refused, REMOVE/DEMOTE/
    /// PROMOTE refused for a vCPU inside, runs ended by an interrupt.
    pub fn contention(&mut self) -> [u64; 6] {
        let mut out = [0; 6];
        let p = self.ptr();
        // SAFETY: `out` has the six words the callee writes.
        unsafe { seam_contention(p, out.as_mut_ptr()) };
        out
    }

    /// The PAMT's type of a page and its owner's TDR.
    pub fn page_type(&mut self, pa: u64) -> Option<(u8, u64)> {
        let mut owner = 0;
        let p = self.ptr();
        // SAFETY: plain out-parameter.
        let t = unsafe { seam_page_type(p, pa, &mut owner) };
        (t >= 0).then_some((t as u8, owner))
    }

    /// The guest's ACCEPT walk: the guest's RAX, or an EPT-violation exit to the host.
    pub fn guest_accept(&mut self, tdr: u64, gpa: u64, level: u8) -> GuestAccept {
        let mut exit = false;
        let p = self.ptr();
        // SAFETY: plain out-parameter.
        let rax = unsafe { seam_guest_accept(p, tdr, gpa, level as i32, &mut exit) };
        if exit {
            GuestAccept::Exit
        } else {
            GuestAccept::Rax(rax)
        }
    }

    /// KVM's shared EPT for vCPU 0's command and result pages of the TD shim (the module's
    /// VP.ENTER reads the shim's commands through it): new tables and pages, given to the vCPU
    /// (VP.WR of SHARED_EPT_POINTER). Returns the command page's and result page's PAs.
    pub fn shim_pages(&mut self, vp: u64) -> Result<(u64, u64), String> {
        use privmem_guest::abi::{CMD_OFF, HARNESS_GPA};
        let root = self.alloc();
        let cmd_gpa = (HARNESS_GPA + CMD_OFF) | 1 << 47;
        let mut pages = [0; 2];
        for (k, page) in pages.iter_mut().enumerate() {
            let gpa = cmd_gpa + k as u64 * PAGE;
            let mut table = root;
            for level in (1..4).rev() {
                let slot = table + ((gpa >> (12 + 9 * level)) & 511) * 8;
                let e = self.read(slot);
                table = if e & 7 != 0 {
                    e & 0x000f_ffff_ffff_f000
                } else {
                    let t = self.alloc();
                    self.write(slot, &[t | 7]);
                    t
                };
            }
            *page = self.alloc();
            self.write(table + ((gpa >> 12) & 511) * 8, &[*page | 7]);
        }
        let mut r = Regs { rcx: vp, rdx: 0x203c, r8: root, r9: !0, ..Default::default() };
        self.ok(leaf::VP_WR, &mut r, "VP.WR SHARED_EPT_POINTER")?;
        Ok((pages[0], pages[1]))
    }

    /// The word at physical address `pa`.
    pub fn read(&mut self, pa: u64) -> u64 {
        // SAFETY: `word` points into a live page.
        unsafe { *self.word(pa) }
    }

    /// A TD through MNG.INIT (4-level S-EPT, one vCPU initialized) with the 512G entry for
    /// the low GPAs added: what KVM has done by the time it maps private memory. Returns
    /// (TDR, TDVPR).
    pub fn build_td(&mut self, hkid: u64, attributes: u64) -> Result<(u64, u64), String> {
        let tdr = self.alloc();
        self.ok(leaf::MNG_CREATE, &mut Regs { rcx: tdr, rdx: hkid, ..Default::default() }, "MNG.CREATE")?;
        self.ok(leaf::MNG_KEY_CONFIG, &mut Regs { rcx: tdr, ..Default::default() }, "MNG.KEY.CONFIG")?;
        for _ in 0..4 {
            let p = self.alloc();
            self.ok(leaf::MNG_ADDCX, &mut Regs { rcx: p, rdx: tdr, ..Default::default() }, "MNG.ADDCX")?;
        }
        let params = self.alloc();
        // attributes, xfam (x87|SSE), max_vcpus, eptp (WB, 4-level), config_flags (NO_RBP_MOD)
        self.write(params, &[attributes, 3, 8, 6 | 3 << 3, 4]);
        self.ok(leaf::MNG_INIT, &mut Regs { rcx: tdr, rdx: params, ..Default::default() }, "MNG.INIT")?;
        let vp = self.alloc();
        self.ok(leaf::VP_CREATE, &mut Regs { rcx: vp, rdx: tdr, ..Default::default() }, "VP.CREATE")?;
        for _ in 0..2 {
            let p = self.alloc();
            self.ok(leaf::VP_ADDCX, &mut Regs { rcx: p, rdx: vp, ..Default::default() }, "VP.ADDCX")?;
        }
        self.ok(leaf::VP_INIT, &mut Regs { rcx: vp, ..Default::default() }, "VP.INIT")?;
        let pdpt = self.alloc();
        self.ok(leaf::MEM_SEPT_ADD, &mut Regs { rcx: 3, rdx: tdr, r8: pdpt, ..Default::default() }, "SEPT.ADD 512G")?;
        Ok((tdr, vp))
    }
}
