/// The whole command runs on a thread with a stack of known size: the operator's
/// `ulimit -s` sizes only the main thread, and a small one (256 KiB) must not turn
/// argument parsing or a deep but valid manifest into a stack-overflow abort.
const STACK_BYTES: usize = 16 * 1024 * 1024;

fn main() -> std::process::ExitCode {
    match std::thread::Builder::new()
        .name("reconcile".into())
        .stack_size(STACK_BYTES)
        .spawn(reconcile::cli::run)
        .map(std::thread::JoinHandle::join)
    {
        Ok(Ok(code)) => code,
        Ok(Err(_)) => {
            eprintln!("error: internal error: reconcile panicked; nothing further was done");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
