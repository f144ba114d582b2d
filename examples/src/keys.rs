//! `--wireshark-keys DIR`: decryption tables for Wireshark, written as SAs come up.
