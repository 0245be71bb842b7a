//! `podbridge`: the operator's command line. Each command lives in a module of its own;
//! this file only parses the command line and turns each command's outcome into an
//! exit code.

mod cancel;
mod connect;
mod console;
mod dev;
mod get;
mod list;
mod output;
mod queues;
mod render;
mod retry;
mod settings;
mod submit;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The message was rejected: it would be recorded as `rejected` and never run.
pub const EXIT_REJECTED: u8 = 2;
/// The command line is wrong. clap's own code for this is 2, which podbridge keeps for
/// a rejected message so that scripts can tell "my message is bad" from "my command
/// is bad"; 64 is `EX_USAGE` from sysexits.h.
pub const EXIT_USAGE: u8 = 64;
/// No job with that id is in the table.
pub const EXIT_NOT_FOUND: u8 = 3;
/// `watch`: the job failed (after its last attempt).
pub const EXIT_FAILED: u8 = 4;
/// `watch`: the job was cancelled.
pub const EXIT_CANCELLED: u8 = 5;
/// `watch`: `--timeout` passed while the job was still active.
pub const EXIT_TIMEOUT: u8 = 6;
/// `watch`: stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// The podbridge operator CLI.
#[derive(Debug, Parser)]
#[command(
    name = "podbridge",
    version,
    about = "Operate podbridge: send jobs, follow them, cancel and retry them, manage the queues they wait in, see the pods they become, and look at it all in the browser (podbridge console).",
    long_about = "Operate podbridge: send jobs, follow them, cancel and retry them, manage the queues they wait in, and see the pods they become.\n\n\
        The operator commands talk to one deployment's job table, queue table, queue and event \
        bus, named by PODBRIDGE_TABLE, PODBRIDGE_QUEUE_TABLE, PODBRIDGE_QUEUE_URL and \
        PODBRIDGE_EVENT_BUS (or --table, --queue-table, --queue-url, --bus), with the usual AWS \
        region and credentials; AWS_ENDPOINT_URL (or --endpoint-url) points them at a local stack. Guardrails are read from the same PODBRIDGE_* environment \
        variables as the deployed functions, so a command answers as the deployment would. The \
        message format is described in docs/JOBS.md.",
    after_help = "Exit codes: 0 success, 1 error (unreadable file, bad or missing setting, AWS or the \
        cluster unreachable), 2 the message (or the watched job) is rejected, 3 no such job, \
        4 the watched job failed, 5 the watched job was cancelled, 6 watch --timeout passed, \
        64 wrong command line, 130 interrupted. Each command's --help says which it uses."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Submit(submit::Args),
    Get(get::Args),
    List(list::Args),
    Watch(watch::Args),
    Cancel(cancel::Args),
    Retry(retry::Args),
    Queues(queues::Args),
    Console(console::Args),
    Render(render::Args),
    /// Run the whole stack locally: moto for AWS, a simulated (or given) cluster, and
    /// the functions' handlers as Lambda would drive them.
    Dev(dev::Args),
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
        Command::Submit(args) => block_on(submit::run(args)),
        Command::Get(args) => block_on(get::run(args)),
        Command::List(args) => block_on(list::run(args)),
        Command::Watch(args) => block_on(watch::run(args)),
        Command::Cancel(args) => block_on(cancel::run(args)),
        Command::Retry(args) => block_on(retry::run(args)),
        Command::Queues(args) => block_on(queues::run(args)),
        Command::Console(args) => block_on(console::run(args)),
        Command::Render(args) => render::run(args),
        Command::Dev(args) => dev::run(args),
    };
    outcome.unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        ExitCode::FAILURE
    })
}

/// Runs an async command on a runtime of its own: only the commands that talk to AWS
/// or a cluster pay for one.
fn block_on(command: impl std::future::Future<Output = anyhow::Result<ExitCode>>) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(command)
}
