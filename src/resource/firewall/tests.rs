//! Table tests of the firewall's pure parts: decode, render, diff.
