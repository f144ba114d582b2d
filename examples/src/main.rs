//! The site-to-site gateway (work in progress).

fn main() {}
