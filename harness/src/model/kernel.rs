//! The kernel axis: every rule of the model that differs between kernel releases, in one
//! table. Each rule names the function it follows, the mainline release it changed in and the
//! first release of every stable line it was backported to; the model runs as one exact
//! [`Release`] and asks [`Model::rule`], never a version number. Checked against the releases
//! in [`KNOWN`]; `next` is taken to hold everything mainline does.
//!
//! A backport found by the lab (a stable release behaving as a later mainline one) is one more
//! entry in its rule's `backports`, plus the release in [`KNOWN`].

use super::Model;
use crate::seq::{Header, Kernel, Release, VmType};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `GUEST_MEMFD_FLAG_MMAP` and `GUEST_MEMFD_FLAG_INIT_SHARED` are accepted by
    /// KVM_CREATE_GUEST_MEMFD (`kvm_gmem_get_supported_flags()`); before, flags must be 0.
    GmemMmapFlags,
    /// A VM without private memory (the default VM type) may have guest_memfd slots
    /// (`kvm_arch_supports_gmem()`); 6.12's `check_memory_region_flags()` allows
    /// `KVM_MEM_GUEST_MEMFD` only where `kvm_arch_has_private_mem()`.
    GmemOnDefaultVm,
    /// `KVM_X86_TDX_VM` exists (merged in 6.16, `vmx/tdx.c`).
    TdxVm,
    /// Binding a guest_memfd range another slot holds is EEXIST
    /// (`kvm_gmem_commit_memory_region()`); before mainline 7.2 (and 6.12.118 in its line)
    /// `kvm_gmem_bind()` made it EINVAL.
    GmemRebindEexist,
    /// `KVM_TDX_INIT_MEM_REGION` over a page already added fails with EIO: `kvm_gmem_populate()`
    /// no longer refuses an up-to-date folio (EEXIST until 6.18), and the map in
    /// `kvm_tdp_mmu_map_private_pfn()` comes back spurious, which it turns into EIO.
    InitMemAddedEio,
    /// Turning dirty logging off makes the TDP MMU's small leaves huge again in place
    /// (`kvm_mmu_recover_huge_pages()`, `recover_huge_pages_range()`); before, they were zapped
    /// (`kvm_mmu_zap_collapsible_sptes()`) for later faults to map huge.
    RecoverHugePages,
}

/// Where a rule's behaviour starts: the mainline release, and each stable line it was
/// backported to with the first release of that line that has it.
pub struct Since {
    pub mainline: Release,
    pub backports: &'static [Release],
}

pub struct RuleInfo {
    pub rule: Rule,
    pub name: &'static str,
    pub since: Since,
    pub source: &'static str,
}

const fn mainline(major: u16, minor: u16) -> Since {
    Since { mainline: Release::new(major, minor, 0), backports: &[] }
}

pub const RULES: [RuleInfo; 6] = [
    RuleInfo {
        rule: Rule::GmemMmapFlags,
        name: "gmem-mmap-flags",
        since: mainline(6, 18),
        source: "virt/kvm/guest_memfd.c kvm_gmem_get_supported_flags()",
    },
    RuleInfo {
        rule: Rule::GmemOnDefaultVm,
        name: "gmem-on-default-vm",
        since: mainline(6, 18),
        source: "virt/kvm/kvm_main.c check_memory_region_flags(), kvm_arch_supports_gmem()",
    },
    RuleInfo { rule: Rule::TdxVm, name: "tdx-vm", since: mainline(6, 16), source: "arch/x86/kvm/vmx/tdx.c" },
    RuleInfo {
        rule: Rule::GmemRebindEexist,
        name: "gmem-rebind-eexist",
        // The binding rework (83411f32b8ad, 3fe5d2944e5a, 513333a55460, af62fe2494da), which
        // Debian's 6.12.118 took as a stable backport.
        since: Since { mainline: Release::new(7, 2, 0), backports: &[Release::new(6, 12, 118)] },
        source: "virt/kvm/guest_memfd.c kvm_gmem_commit_memory_region()",
    },
    RuleInfo {
        rule: Rule::InitMemAddedEio,
        name: "init-mem-added-eio",
        since: mainline(7, 3),
        source: "virt/kvm/guest_memfd.c kvm_gmem_populate(), arch/x86/kvm/mmu/mmu.c kvm_tdp_mmu_map_private_pfn()",
    },
    RuleInfo {
        rule: Rule::RecoverHugePages,
        name: "recover-huge-pages",
        since: mainline(6, 13),
        source: "arch/x86/kvm/x86.c kvm_mmu_slot_apply_flags(), arch/x86/kvm/mmu/tdp_mmu.c recover_huge_pages_range()",
    },
];

/// The releases the table was checked against, oldest first: each line's newest is what a
/// newer release of that line is modelled as (with a drift warning), and `cargo test` replays
/// every scenario as each release here that it holds on.
pub const KNOWN: [Release; 5] = [
    // Debian 12's 6.12 before the binding rework's backport, the lab kernel until 2026-11.
    Release::new(6, 12, 117),
    // Debian 12's 6.12.118-1~deb12u1: took the guest_memfd binding rework (EEXIST on a rebind).
    Release::new(6, 12, 118),
    // The development host's KVM.
    Release::new(6, 18, 44),
    // Debian trixie-backports' 7.3.
    Release::new(7, 3, 4),
    Release::NEXT,
];

impl Rule {
    pub fn info(self) -> &'static RuleInfo {
        RULES.iter().find(|r| r.rule == self).expect("every rule has a row")
    }
    pub fn holds(self, r: Release) -> bool {
        let s = &self.info().since;
        r >= s.mainline || s.backports.iter().any(|b| b.same_line(r) && r >= *b)
    }
}

/// What a running kernel's release is modelled as, and why that may be off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Modelled {
    pub release: Release,
    /// Set where the release is past what the table knows: a difference on it may be a
    /// backport or a change the table has no row for yet.
    pub drift: Option<String>,
}

/// The release the model runs as for a kernel that reports `actual`: itself where the table
/// knows its line up to it (every rule is a release comparison, so an older stable release is
/// modelled exactly); else the newest known release at or below it (the newest of its own
/// line, or, on a line the table knows nothing of, of the line before: a 7.4 behaves as 7.3
/// until a rule says otherwise), with a drift warning. The generated C does the same
/// (`kselftest_prelude.c`'s `modelled()`).
pub fn modelled(actual: Release) -> Modelled {
    if actual.is_next() {
        return Modelled { release: actual, drift: None };
    }
    let releases = || KNOWN.iter().copied().filter(|r| !r.is_next());
    let in_line = releases().filter(|r| r.same_line(actual)).max();
    if in_line.is_some_and(|n| actual <= n) {
        return Modelled { release: actual, drift: None };
    }
    let Some(below) = releases().filter(|&r| r <= actual).max() else {
        return Modelled { release: actual, drift: None };
    };
    let drift = match in_line {
        Some(n) => format!("{actual} is newer than the table's {n}: a difference may be a stable backport (model/kernel.rs)"),
        None if below == releases().max().expect("the table knows releases") => format!(
            "{actual} is newer than the table's newest release, {below}, and modelled as it: a difference may be a change the table has no rule for (model/kernel.rs)"
        ),
        None => format!(
            "the table knows no {}.{} release: {actual} is modelled as {below}, and a difference may be a change the table has no rule for (model/kernel.rs)",
            actual.major, actual.minor
        ),
    };
    Modelled { release: below, drift: Some(drift) }
}

/// A release named on the command line (`--kernel 6.12.118`) or by a line (`--kernel 6.12`,
/// the newest release the table knows of it).
pub fn parse_release_arg(s: &str) -> Result<Release, String> {
    if let Some(k) = Kernel::from_name(s) {
        return Ok(newest_of(k));
    }
    Release::parse(s).ok_or_else(|| {
        format!("`{s}` is neither a kernel line (6.12, 6.18, 7.3, next) nor a release (6.12.118, 7.3.4)")
    })
}

/// `--kernel`: a line or a release, as the model will run it (a release past the table is
/// modelled as the table's newest of its line, with the drift said).
pub fn kernel_arg(s: &str) -> Result<Modelled, String> {
    parse_release_arg(s).map(modelled).map_err(|e| format!("--kernel: {e}"))
}

/// The newest release the table knows of a line.
pub fn newest_of(k: Kernel) -> Release {
    KNOWN.iter().copied().filter(|r| r.line() == Some(k)).max().unwrap_or(k.first())
}

/// Whether a sequence's header can be set up on release `k` at all (its VM type and its
/// guest_memfd flags exist there); the error says what `k` refuses. Whether the sequence
/// names `k` is [`crate::seq::Header::names_kernel`].
pub fn header_allows(h: &Header, k: Release) -> Result<(), String> {
    if h.vm == VmType::Tdx && !Rule::TdxVm.holds(k) {
        return Err(format!("vm tdx: Linux {k} has no KVM_X86_TDX_VM (KVM_CREATE_VM fails with EINVAL)"));
    }
    if let Some(g) = h.gmems.iter().find(|g| g.mmap || g.init_shared) {
        if !Rule::GmemMmapFlags.holds(k) {
            return Err(format!(
                "gmem {}: Linux {k} takes no guest_memfd flags (KVM_CREATE_GUEST_MEMFD fails with EINVAL)",
                g.name
            ));
        }
    }
    if !h.vm.has_private_mem() && !Rule::GmemOnDefaultVm.holds(k) {
        if let Some(s) = h.slots.iter().find(|s| s.gmem.is_some()) {
            return Err(format!("slot {}: Linux {k} has no guest_memfd slots on vm {} (EINVAL)", s.id, h.vm.name()));
        }
    }
    Ok(())
}

/// Whether a sequence holds on release `k`: it names it (or names none) and KVM there can set
/// its header up.
pub fn holds_on(h: &Header, k: Release) -> bool {
    h.names_kernel(k) && header_allows(h, k).is_ok()
}

/// Whether KVM can set a header up on some release of range `r`: a known one in it, or its
/// first where it holds none.
pub fn range_allows(h: &Header, r: crate::seq::KernelRange) -> bool {
    let mut rels: Vec<Release> = KNOWN.into_iter().filter(|&k| r.contains(k)).collect();
    if rels.is_empty() {
        rels.push(r.lo);
    }
    rels.into_iter().any(|k| header_allows(h, k).is_ok())
}

/// The known releases ([`KNOWN`]) a sequence holds on.
pub fn kernels_for(h: &Header) -> Vec<Release> {
    KNOWN.into_iter().filter(|&k| holds_on(h, k)).collect()
}

impl Model {
    /// Whether `r` holds on the release the model runs as.
    pub fn rule(&self, r: Rule) -> bool {
        r.holds(self.kernel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_one_row_and_a_source() {
        for (i, r) in RULES.iter().enumerate() {
            assert_eq!(r.rule.info().name, r.name);
            assert!(!r.source.is_empty());
            assert!(RULES[i + 1..].iter().all(|o| o.rule != r.rule && o.name != r.name));
            assert!(r.rule.holds(Release::NEXT));
            for b in r.since.backports {
                assert!(
                    *b < r.since.mainline && b.patch > 0,
                    "{}: a backport is an older line's stable release",
                    r.name
                );
            }
        }
    }

    #[test]
    fn a_backport_holds_from_its_release_on_in_its_line_only() {
        let r = Rule::GmemRebindEexist;
        assert!(!r.holds(Release::new(6, 12, 117)));
        assert!(r.holds(Release::new(6, 12, 118)) && r.holds(Release::new(6, 12, 200)));
        assert!(!r.holds(Release::new(6, 18, 44)));
        assert!(!r.holds(Release::new(7, 1, 9)));
        assert!(r.holds(Release::new(7, 2, 0)) && r.holds(Release::new(7, 3, 4)));
    }

    #[test]
    fn releases_past_the_table_say_so() {
        let m = modelled(Release::new(6, 12, 119));
        assert_eq!(m.release, Release::new(6, 12, 118));
        assert_eq!(
            m.drift.as_deref().map(|d| d.split(':').next().unwrap()),
            Some("6.12.119 is newer than the table's 6.12.118")
        );
        assert_eq!(modelled(Release::new(6, 12, 118)), Modelled { release: Release::new(6, 12, 118), drift: None });
        assert_eq!(modelled(Release::new(6, 12, 90)).drift, None);
        let m = modelled(Release::new(7, 4, 1));
        assert_eq!(m.release, Release::new(7, 3, 4));
        assert!(m.drift.unwrap().contains("newer than the table's newest release, 7.3.4"));
        let m = modelled(Release::new(6, 16, 3));
        assert_eq!(m.release, Release::new(6, 12, 118));
        assert!(m.drift.unwrap().contains("knows no 6.16 release"));
        assert_eq!(parse_release_arg("6.12").unwrap(), Release::new(6, 12, 118));
        assert_eq!(parse_release_arg("6.12.117").unwrap(), Release::new(6, 12, 117));
        assert!(parse_release_arg("six").is_err());
        for k in KNOWN {
            assert!(k.line().is_some(), "{k}: a known release is of a known line");
        }
    }
}
