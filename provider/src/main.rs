//! terraform-provider-constellation.

fn main() {
    eprintln!("terraform-provider-constellation: not implemented yet");
    std::process::exit(1);
}
