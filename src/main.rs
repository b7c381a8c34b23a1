//! The `tokengate` command: parse the command line and dispatch.

use std::io::{BufRead, IsTerminal};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokengate::api::body::{check_email, check_length};
use tokengate::auth::keys::{Activation, KeyAlgorithm, KeyDir, KeyError, KeyState};
use tokengate::auth::password;
use tokengate::config::Settings;
use tokengate::error::FieldErrors;
use tokengate::logging;
use tokengate::startup::Application;
use tokengate::store::{CreateError, Running, Store};

/// JWT authentication API with real logout: tokens are revoked durably in a
/// SQLite denylist that every authenticated route checks.
#[derive(Debug, Parser)]
#[command(name = "tokengate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    settings: Settings,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the API (the default).
    Serve,
    /// Manage users.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Delete what no token can need any more (expired revocations, ended
    /// and expired sessions, expired refresh tokens) now, and print how many.
    Purge,
    /// Copy everything (users, sessions, refresh-token hashes, the denylist,
    /// global-logout marks) from the configured database into an empty one
    /// of either engine: a SQLite file path or a postgres:// URL.
    Copy {
        /// The target: a SQLite file path or a postgres:// URL; it must be
        /// empty (a new file, or a database without tokengate's data).
        #[arg(long)]
        to: String,
    },
    /// Manage the EdDSA/ES256 signing keys in --keys-dir (rotation).
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Print the OpenAPI document (JSON, or YAML with --yaml).
    Openapi {
        /// Print YAML instead of JSON.
        #[arg(long)]
        yaml: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from standard input (one line).
    Add {
        /// E-mail address (stored lower-cased).
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long)]
        name: String,
    },
    /// Log a user out everywhere (incident response): every session ends and
    /// every access token issued up to now is rejected. Prints how many
    /// sessions ended.
    Revoke {
        /// E-mail address of the user.
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print every key: kid, state, algorithm, creation time.
    List,
    /// Create a key of --jwt-algorithm in state `next`: published in the
    /// JWKS, not signing yet (the first key of an empty directory is `active`).
    Add,
    /// Make a key `active` (it signs new tokens); the active one becomes `previous`.
    Activate {
        /// The key's kid (it may begin with `-`).
        #[arg(value_name = "KID", allow_hyphen_values = true)]
        kid: String,
    },
    /// Remove a key that is not active: tokens it signed are rejected from then on.
    Retire {
        /// The key's kid (it may begin with `-`).
        #[arg(value_name = "KID", allow_hyphen_values = true)]
        kid: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.settings),
        Command::User {
            action: UserCommand::Add { email, name },
        } => add_user(&cli.settings, &email, &name),
        Command::User {
            action: UserCommand::Revoke { email },
        } => revoke_user(&cli.settings, &email),
        Command::Purge => purge(&cli.settings),
        Command::Copy { to } => copy(&cli.settings, &to),
        Command::Keys { action } => keys(&cli.settings, action),
        Command::Openapi { yaml } => {
            let service = tokengate::api::service();
            let text = if yaml {
                service.spec_yaml()
            } else {
                service.spec()
            };
            print!("{}", text.trim_end());
            println!();
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tokengate: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> Result<(), String> {
    // Log lines are buffered and written by a background thread (see
    // `tokengate::logging`); the guard flushes them at exit.
    let (writer, _flush_guard) =
        logging::buffered_stdout().map_err(|e| format!("cannot start the log writer: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stdout().is_terminal())
        .with_writer(writer.clone())
        .init();
    if !std::io::stdout().is_terminal() {
        logging::install_access_log(writer);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        // Install the handlers before binding: a SIGTERM that arrives as soon
        // as the port answers must already mean "shut down gracefully".
        let shutdown = shutdown_signal().map_err(|e| format!("cannot handle signals: {e}"))?;
        let app = Application::build(settings)
            .await
            .map_err(|e| e.to_string())?;
        app.run_until(shutdown)
            .await
            .map_err(|e| format!("server error: {e}"))
    })
}

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM; the handlers are
/// registered when this is called, not when the future is first polled.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("shutdown signal received; finishing in-flight requests");
    })
}

fn add_user(settings: &Settings, email: &str, name: &str) -> Result<(), String> {
    let stdin = std::io::stdin();
    let mut line = String::new();
    if stdin.is_terminal() {
        // Echo off before the prompt: whatever is typed once it shows is hidden.
        let _echo_off = terminal::EchoOff::new();
        eprint!("Password (8 to 1024 characters, not shown), then Enter: ");
        let read = stdin.lock().read_line(&mut line);
        eprintln!();
        read
    } else {
        stdin.lock().read_line(&mut line)
    }
    .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);

    let mut errors = FieldErrors::new();
    check_email(email, "email", &mut errors);
    check_length(name, "name", 1, 255, &mut errors);
    check_length(password, "password", 8, 1024, &mut errors);
    if !errors.is_empty() {
        let problems: Vec<String> = errors
            .iter()
            .map(|(field, problems)| format!("{field} {}", problems.join(", ")))
            .collect();
        return Err(format!("invalid user: {}", problems.join("; ")));
    }

    let hash = password::hash_now(password).map_err(|e| e.to_string())?;
    let email = email.to_lowercase();
    with_store(settings, |store| async move {
        match store
            .create_user(name.to_owned(), email.clone(), hash)
            .await
        {
            Ok(user) => {
                println!("created user {} <{}>", user.id, user.email);
                Ok(())
            }
            Err(CreateError::EmailTaken) => Err(format!(
                "a user with the e-mail address {email} already exists"
            )),
            Err(CreateError::Store(e)) => Err(e.to_string()),
        }
    })
}

fn revoke_user(settings: &Settings, email: &str) -> Result<(), String> {
    let email = email.trim().to_lowercase();
    let at_us = chrono::Utc::now().timestamp_micros();
    with_store(settings, |store| async move {
        match store.revoke_user(&email, at_us).await {
            Ok(Some(ended)) => {
                println!(
                    "logged {email} out everywhere: {ended} sessions ended; every token issued until now is rejected"
                );
                Ok(())
            }
            Ok(None) => Err(format!("there is no user with the e-mail address {email}")),
            Err(e) => Err(e.to_string()),
        }
    })
}

fn purge(settings: &Settings) -> Result<(), String> {
    with_store(settings, |store| async move {
        let purged = store.purge().await.map_err(|e| e.to_string())?;
        println!(
            "purged {} expired revocations, {} sessions and {} refresh tokens",
            purged.revocations, purged.sessions, purged.refresh_tokens
        );
        Ok(())
    })
}

fn copy(settings: &Settings, to: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let settings = settings.clone();
    let to = to.to_owned();
    let copied = runtime.block_on(async move {
        tokio::task::spawn_blocking(move || tokengate::store::copy::copy(&settings, &to))
            .await
            .map_err(|e| format!("the copy failed: {e}"))?
    })?;
    println!(
        "copied {} users, {} sessions, {} refresh tokens and {} revocations",
        copied.users, copied.sessions, copied.refresh_tokens, copied.revocations
    );
    Ok(())
}

/// Runs a maintenance command on the configured database, which must
/// already exist, then lets the store finish its background work (the last
/// commit is durable before the process exits).
fn with_store<F, Fut>(settings: &Settings, work: F) -> Result<(), String>
where
    F: FnOnce(std::sync::Arc<Store>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let opening = settings.clone();
    runtime.block_on(async {
        // Opening blocks (and, for PostgreSQL, uses this runtime).
        let (store, running): (Store, Running) =
            tokio::task::spawn_blocking(move || Store::open(&opening, true))
                .await
                .map_err(|e| format!("cannot open the database: {e}"))?
                .map_err(|e| e.to_string())?;
        let store = std::sync::Arc::new(store);
        let result = work(store.clone()).await;
        drop(store);
        running.finish(Duration::from_secs(30)).await;
        result
    })
}

/// `tokengate keys ...`. `list`, `activate` and `retire` work on the
/// directory whatever the algorithm (so keys can be prepared before switching
/// from HS256); `add` needs EdDSA or ES256 to know which kind of key to make.
fn keys(settings: &Settings, action: KeysCommand) -> Result<(), String> {
    let dir = KeyDir::new(settings.keys_dir_path());
    let configured = KeyAlgorithm::for_setting(settings.jwt_algorithm);
    let shown = |e: KeyError| e.to_string();
    match action {
        KeysCommand::List => {
            let set = dir.load().map_err(shown)?;
            println!("{:<43}  {:<8}  {:<9}  CREATED", "KID", "STATE", "ALGORITHM");
            for key in set.keys() {
                let record = key.record();
                println!(
                    "{:<43}  {:<8}  {:<9}  {}",
                    record.kid,
                    record.state.name(),
                    record.algorithm.name(),
                    record.created_at
                );
            }
            if configured.is_none() {
                eprintln!(
                    "note: --jwt-algorithm is HS256, so these keys sign nothing; \
                     they are used with EdDSA or ES256"
                );
            }
        }
        KeysCommand::Add => {
            let Some(algorithm) = configured else {
                return Err(
                    "`keys add` needs --jwt-algorithm EdDSA or ES256 (the kind of key \
                            to create); with HS256 tokens are signed with the shared secret"
                        .to_owned(),
                );
            };
            let record = dir.add(algorithm).map_err(shown)?;
            match record.state {
                KeyState::Active => println!(
                    "added key {} ({}, active: the directory had no key)",
                    record.kid,
                    record.algorithm.name()
                ),
                _ => println!(
                    "added key {} ({}, next): it is published in the JWKS now; activate it \
                     with `tokengate keys activate {}` once resource servers have it \
                     (after the JWKS cache time, 600 s)",
                    record.kid,
                    record.algorithm.name(),
                    record.kid
                ),
            }
        }
        KeysCommand::Activate { kid } => match dir.activate(&kid).map_err(shown)? {
            Activation::AlreadyActive => println!("key {kid} is already active"),
            Activation::Activated {
                previous: Some(previous),
            } => println!("activated key {kid}; key {previous} is now previous"),
            Activation::Activated { previous: None } => println!("activated key {kid}"),
        },
        KeysCommand::Retire { kid } => {
            dir.retire(&kid).map_err(shown)?;
            println!("retired key {kid}: tokens it signed are rejected from now on");
        }
    }
    Ok(())
}

/// Turning terminal echo off while a password is typed.
mod terminal {
    /// Echo is off on standard input while this lives (if it is a terminal);
    /// dropping it restores the previous settings, also on an early return.
    pub struct EchoOff(Option<libc::termios>);

    impl EchoOff {
        /// Turns echo off; does nothing if the terminal cannot be configured.
        pub fn new() -> Self {
            // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
            unsafe {
                let mut saved: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                    return Self(None);
                }
                let mut quiet = saved;
                quiet.c_lflag &= !libc::ECHO;
                if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) != 0 {
                    return Self(None);
                }
                Self(Some(saved))
            }
        }
    }

    impl Drop for EchoOff {
        fn drop(&mut self) {
            if let Some(saved) = self.0 {
                // SAFETY: restores the settings read in `new`.
                unsafe {
                    libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &saved);
                }
            }
        }
    }
}
