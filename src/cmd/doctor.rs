//! `sbox doctor`: what this host offers, one line per capability.

use crate::doctor::{can_run, render_json, render_text, run_checks, UserInfo};
use crate::error::Result;

pub fn run(json: bool) -> Result<u8> {
    let checks = run_checks(&UserInfo::current());
    if json {
        println!("{}", render_json(&checks));
    } else {
        print!("{}", render_text(&checks));
    }
    Ok(if can_run(&checks) { 0 } else { 1 })
}
