//! Which scenarios a lab run takes when none are named: the corpus's default and SW_PROTECTED
//! ones for real KVM, its TDX and SNP ones for the emulated mode.

use super::lab_build::repo;
use super::load;
use crate::corpus::seq_files;
use crate::seq::VmType;
use std::path::PathBuf;

/// The scenarios a lab run replays: the FILEs named, or every default and SW_PROTECTED one of
/// corpus/ (the VM types a lab kernel under TCG has).
pub fn lab_files(named: &[String]) -> Result<Vec<PathBuf>, String> {
    Ok(if named.is_empty() {
        seq_files(&repo().join("corpus"))
            .into_iter()
            .filter(|f| {
                load(&f.display().to_string())
                    .is_ok_and(|s| matches!(s.header.vm, VmType::Default | VmType::SwProtected))
            })
            .collect()
    } else {
        named.iter().map(PathBuf::from).collect()
    })
}

/// The FILEs, or the corpus's TDX and SNP scenarios (`lab --emulated`).
/// `lab --tdx`: the FILEs, or every TDX scenario of the corpus.
pub fn tdx_files(named: &[String]) -> Vec<PathBuf> {
    if !named.is_empty() {
        return named.iter().map(PathBuf::from).collect();
    }
    seq_files(&repo().join("corpus"))
        .into_iter()
        .filter(|f| load(&f.display().to_string()).is_ok_and(|s| s.header.vm == VmType::Tdx))
        .collect()
}

pub fn emulated_files(named: &[String]) -> Vec<PathBuf> {
    if !named.is_empty() {
        return named.iter().map(PathBuf::from).collect();
    }
    seq_files(&repo().join("corpus"))
        .into_iter()
        .filter(|f| load(&f.display().to_string()).is_ok_and(|s| matches!(s.header.vm, VmType::Tdx | VmType::Snp)))
        .collect()
}
