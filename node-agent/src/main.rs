//! `pullgate-agent` entry point: parse the command line and hand over to [`pullgate_agent::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = pullgate_agent::cli::Cli::parse();
    pullgate_agent::cli::main(cli)
}
