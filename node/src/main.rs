//! The `weft` binary.

fn main() -> std::process::ExitCode {
    weft_node::cli::main()
}
