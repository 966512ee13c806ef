//! The Constellation node agent (PID 1 of the node image).

fn main() {
    eprintln!("constellation-node: not implemented yet");
    std::process::exit(1);
}
