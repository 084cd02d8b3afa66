"""The measurements: the accuracy and speed sweeps, the roofline, overflow, the
Blanchard-Higham-Higham reproduction, the peers, and the bit-identity guard rail."""
