fn main() {
    std::process::exit(privmem::cli::main(std::env::args().skip(1).collect()));
}
