fn main() -> std::process::ExitCode {
    // Deep input never recurses on this thread: the command line is parsed and the
    // manifests are loaded on threads with stacks of known size (see cli::run and
    // manifest::load), so a small `ulimit -s` cannot turn them into an abort.
    reconcile::cli::run()
}
