//! The lab's kernels: `ci/lab/kernels`, the one table the CLI, the scripts and `lab --baseline`
//! read. Adding a lab kernel is a line there (and its known release in `model/kernel.rs`).

/// One lab kernel: the name the options take, where its source package comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabKernel {
    pub name: &'static str,
    pub suite: &'static str,
    pub package: &'static str,
}

const TABLE: &str = include_str!("../../../ci/lab/kernels");

/// The table's kernels, in its order (the first is the default).
pub fn all() -> Vec<LabKernel> {
    TABLE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let w: Vec<&'static str> = l.split_whitespace().collect();
            assert!(w.len() == 3, "ci/lab/kernels: `{l}`: expected NAME SUITE PACKAGE");
            LabKernel { name: w[0], suite: w[1], package: w[2] }
        })
        .collect()
}

/// The default lab kernel.
pub fn default() -> LabKernel {
    all()[0]
}

/// The kernel the software TDX module's flavour builds on (`build-kernel.sh --tdx`): the
/// table's last, the newest, which the glue (`ci/lab/tdx/glue.patch`) is written against.
pub fn tdx() -> LabKernel {
    *all().last().expect("ci/lab/kernels has kernels")
}

/// The lab kernel of that name.
pub fn named(name: &str) -> Option<LabKernel> {
    all().into_iter().find(|k| k.name == name)
}

/// The names, for messages: "6.12, 7.3".
pub fn names() -> String {
    all().iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_and_each_kernel_is_a_line_the_model_knows() {
        let all = all();
        assert!(all.len() >= 2, "{all:?}");
        assert_eq!(default(), all[0]);
        for k in &all {
            assert!(k.package.starts_with("linux-source-"), "{k:?}");
            let line = crate::model::kernel::kernel_arg(k.name);
            assert!(line.is_ok(), "{}: not a kernel line the model knows: {:?}", k.name, line.err());
        }
        assert!(named("6.12").is_some() && named("5.10").is_none());
        assert_eq!(tdx().name, "7.3", "the TDX glue is written against 7.3");
    }
}
