//! `sbox doctor` (placeholder until the host checks land).

use crate::error::Result;

pub fn run(_json: bool) -> Result<u8> {
    Ok(0)
}
