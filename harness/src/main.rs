fn main() {
    // In the lab's initramfs privmem is /init.
    if std::process::id() == 1 {
        privmem::lab::init_main();
    }
    std::process::exit(privmem::cli::main(std::env::args().skip(1).collect()));
}
