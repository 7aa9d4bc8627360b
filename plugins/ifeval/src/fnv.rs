/// FNV-1a, the hash of the n-gram table: build.rs builds the table with it and the
/// detector looks n-grams up with it, so both include this one file.
fn fnv1a(b: &[u8]) -> u32 {
    b.iter()
        .fold(0x811c_9dc5u32, |h, &x| (h ^ x as u32).wrapping_mul(0x0100_0193))
}
