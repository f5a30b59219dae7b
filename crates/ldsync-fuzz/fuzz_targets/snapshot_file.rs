//! A snapshot file's contents, read back both ways ldsync reads them: whole into memory
//! (`KeySet::from_bytes`) and mapped in place (`MappedKeySet::open`). The input gets a valid
//! checksum appended, so that the parser past the checksum is what the fuzzer explores. Either
//! read refuses the input with an error or yields an ordered set whose every key is readable.

#![no_main]

use std::path::Path;

use ldsync_diff::{KeySet, MappedKeySet, SortedKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(data).to_le_bytes());
    let in_memory = KeySet::from_bytes(&bytes, Path::new("fuzz.keys"));
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("fuzz.keys");
    std::fs::write(&path, &bytes).expect("the input is written");
    let mapped = MappedKeySet::open(&path);
    assert_eq!(in_memory.is_ok(), mapped.is_ok(), "both reads agree on {data:?}");
    if let (Ok(set), Ok(mapped)) = (in_memory, mapped) {
        assert_eq!(set.len(), mapped.len());
        for index in 0..set.len() {
            assert_eq!(set.key(index), mapped.key(index));
            assert_eq!(set.fingerprint(index), SortedKeys::fingerprint(&mapped, index));
        }
    }
});
