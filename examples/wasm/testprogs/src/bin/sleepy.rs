//! Sleeps for the number of seconds given (default 3600) inside one host
//! call, then prints `woke`.

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3600);
    println!("sleeping {secs}s");
    std::thread::sleep(std::time::Duration::from_secs(secs));
    println!("woke");
}
