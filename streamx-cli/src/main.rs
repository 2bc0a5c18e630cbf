//! `streamx`: the operator's command line for streamx. See `streamx --help` and the README's
//! "Operating streamx" section.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod confirm;
mod connection;
mod dashboard;
mod discovery;
mod error;
mod output;
mod overview;
mod rates;
mod template;

use cli::{Cli, Command};
use connection::Connection;
use error::Result;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::exit::FAILURE);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", output::printable(&e.to_string()));
            e.exit_code()
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let conn = Connection::open(&cli.url).await?;
    let json = cli.json;
    match &cli.command {
        Command::Streams { pattern, no_scan } => {
            commands::inspect::streams(&conn, pattern.as_deref(), !*no_scan, json).await
        }
        Command::Info { stream } => match conn.inspector().topic(stream).await? {
            Some(topic) => commands::topics::info(&conn, &topic, json).await,
            None => commands::inspect::info(&conn, stream, json).await,
        },
        Command::Topics { command } => commands::topics::run(&conn, command.as_ref(), json).await,
        Command::Pending { stream, group, consumer, limit } => {
            commands::inspect::pending(&conn, stream, group, consumer.as_deref(), *limit, json).await
        }
        Command::Tail(args) => commands::tail::tail(&conn, args, json).await,
        Command::Publish(args) => commands::publish::publish(&conn, args, json).await,
        Command::Dlq { command } => commands::dlq::run(&conn, command, json).await,
        Command::Top(args) => commands::top::top(&conn, args, json).await,
        Command::Dashboard(args) => dashboard::serve(conn, args).await,
        Command::Retries { command } => commands::retries::run(&conn, command, json).await,
        Command::Scheduled { command } => commands::scheduled::run(&conn, command, json).await,
        Command::Pause { stream, group, by } => commands::pause::pause(&conn, stream, group, by.as_deref(), json).await,
        Command::Resume { stream, group } => commands::pause::resume(&conn, stream, group, json).await,
        Command::Group { command } => commands::group::run(&conn, command, json).await,
    }
}
