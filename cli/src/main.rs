//! `podbridge`: the operator's command line. Each command lives in a module of its own;
//! this file only parses the command line and turns each command's outcome into an
//! exit code.

mod render;
mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The message was rejected: it would be recorded as `rejected` and never run.
pub const EXIT_REJECTED: u8 = 2;
/// The command line is wrong. clap's own code for this is 2, which podbridge keeps for
/// a rejected message so that scripts can tell "my message is bad" from "my command
/// is bad"; 64 is `EX_USAGE` from sysexits.h.
pub const EXIT_USAGE: u8 = 64;

/// The podbridge operator CLI.
#[derive(Debug, Parser)]
#[command(
    name = "podbridge",
    version,
    about = "Operate podbridge: check job messages and see the pods they become.",
    long_about = "Operate podbridge: check job messages and see the pods they become.\n\n\
        Guardrails are read from the same PODBRIDGE_* environment variables as the \
        deployed functions, so a command answers as the deployment would. The message \
        format is described in docs/JOBS.md.",
    after_help = "Exit codes: 0 success, 1 error (unreadable file, bad PODBRIDGE_* variable), \
        2 the message is rejected, 64 wrong command line."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Render(render::Args),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // `--help` and `--version` arrive here too; they go to stdout and succeed.
            let _ = error.print();
            return if error.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS };
        }
    };
    let outcome = match &cli.command {
        Command::Render(args) => render::run(args),
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
}
