//! Sockets and the TUN device.
