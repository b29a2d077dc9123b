//! The `oddsbus` binary: configuration, logging and the shutdown signal; the rest is the
//! library's `Server`.

use std::io::IsTerminal;
use std::process::ExitCode;

use oddsbus::{Config, LogFormat, Server};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::from_args();
    let filter = match EnvFilter::try_new(&config.log_filter) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!(
                "oddsbus: invalid --log filter `{}`: {error}",
                config.log_filter
            );
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        // Colour only on a terminal: a log file or a pipe gets plain text.
        LogFormat::Pretty => logs.with_ansi(std::io::stdout().is_terminal()).init(),
    }

    let listener = match tokio::net::TcpListener::bind(config.listen.as_str()).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(event = "server.bind_failed", addr = %config.listen, %error);
            return ExitCode::FAILURE;
        }
    };
    match Server::new(config).run(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        // A configuration the cluster refuses: as a bad flag is, with 2.
        Err(why) => {
            eprintln!("oddsbus: {why}");
            ExitCode::from(2)
        }
    }
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed here, before the server
/// listens: a signal arriving between "listening" and the first poll would otherwise meet
/// the default action and kill the process without a graceful shutdown.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(event = "server.signal_error", %error);
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(event = "server.signal_error", %error);
            std::future::pending::<()>().await;
        }
        tracing::info!(event = "server.signal", "shutdown requested");
    }
}
