fn main() {
    println!("ssm-lite {}", env!("CARGO_PKG_VERSION"));
}
