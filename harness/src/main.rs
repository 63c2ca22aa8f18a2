fn main() {
    // In the lab's initramfs privmem is /init.
    if std::process::id() == 1 {
        privmem::cli::lab_init::init_main();
    }
    // A closed pipe (`privmem -h | head -1`) ends privmem quietly, as it ends any filter,
    // instead of a panic in println!. Rust ignores SIGPIPE by default.
    // SAFETY: restoring a signal's default disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(privmem::cli::main(std::env::args().skip(1).collect()));
}
