//! Allocates and touches the number of mebibytes given (default 256), then
//! prints `allocated N MiB`.

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let mut blocks = Vec::new();
    for i in 0..mib {
        let mut block = vec![0u8; 1 << 20];
        block[i % (1 << 20)] = 1;
        blocks.push(block);
    }
    println!("allocated {} MiB", blocks.len());
}
