fn main() -> std::process::ExitCode {
    aldea::main()
}
