//! `ipsec-gateway`: a site-to-site IKEv1/ESP gateway built from the ipsec crates.
//!
//! The protocol crates are sans-IO; this binary is where the I/O lives: the UDP sockets on
//! ports 500 and 4500, a raw ESP socket, the TUN device that carries inner packets, the clock,
//! the random number generator, signals and the control socket.
//!
//! Commands:
//! - `ipsec-gateway check CONFIG`: parse and validate a config, print what it means.
//! - `ipsec-gateway run CONFIG [--wireshark-keys DIR]`: run the gateway (as root).
//! - `ipsec-gateway status [--socket PATH | CONFIG]`: ask a running gateway for its tunnels'
//!   state.

mod config;
mod control;
mod datapath;
mod gateway;
mod icmp;
mod keys;
mod net;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "ipsec-gateway",
    version,
    about = "Site-to-site IKEv1/ESP gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and validate a config file and print the tunnels it defines.
    Check {
        /// The TOML config file.
        config: PathBuf,
    },
    /// Run the gateway (needs root: TUN device, routes, ports 500 and 4500).
    Run {
        /// The TOML config file.
        config: PathBuf,
        /// Write Wireshark decryption tables (esp_sa, ikev1_decryption_table) into this
        /// directory as SAs come up. They hold keys: for debugging only.
        #[arg(long, value_name = "DIR")]
        wireshark_keys: Option<PathBuf>,
    },
    /// Print the state of a running gateway's tunnels.
    Status {
        /// The control socket (default: the one CONFIG names, else /run/ipsec-gateway.sock).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// A config file whose gateway.control_socket to use (only that setting is read,
        /// so the tunnels' keys need not be at hand).
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run {
            config,
            wireshark_keys,
        } => {
            init_tracing();
            match gateway::run(&config, wireshark_keys) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status { socket, config } => {
            let path = match (socket, config) {
                (Some(s), _) => s,
                (None, Some(c)) => match config::control_socket(&c) {
                    Ok(Some(socket)) => socket,
                    Ok(None) => {
                        eprintln!(
                            "error: {} names no gateway.control_socket: a gateway run with it has no control socket",
                            c.display()
                        );
                        return ExitCode::FAILURE;
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                (None, None) => PathBuf::from(control::DEFAULT_SOCKET),
            };
            match control::query_status(&path) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Logs to stderr; `RUST_LOG` filters (default `info`: tunnel state changes).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// `check`: exit 0 and a summary when the config is valid, else exit 1 and the error.
fn check(path: &std::path::Path) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", config::describe(&cfg));
    // What `run` will do next, short of binding sockets: load each tunnel's PSK (from
    // its file or environment variable) and build the IKE endpoint's tunnel config.
    let mut ok = true;
    for t in &cfg.tunnels {
        if let Err(e) = gateway::to_endpoint_config(t) {
            eprintln!("error: tunnel {:?}: {e}", t.name);
            ok = false;
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
