//! The `agentpulse` command.

mod cli;

// The pipeline allocates many small, short-lived values (JSON maps,
// records); mimalloc handles that pattern far better than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
