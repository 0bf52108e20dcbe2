//! The official CIFAR-10 binary release: its six files with their MD5s, and the tarball they
//! come in.

/// The six files of the official CIFAR-10 binary release and their MD5 after decompression.
pub const CIFAR10_FILES: [(&str, &str); 6] = [
    ("data_batch_1.bin", "5dd7e06a14cb22eb9f671a540d1b7c25"),
    ("data_batch_2.bin", "5ea93a67294ea407fff1d09f752e9692"),
    ("data_batch_3.bin", "942cd6a4bcdd0dd3c604fbe906cb4421"),
    ("data_batch_4.bin", "ae636b3ba5c66a11e91e8cb52e771fcb"),
    ("data_batch_5.bin", "53f37980c15c3d472c316c40844f3f0d"),
    ("test_batch.bin", "803d5f7f4d78ea53de84dbe85f74fb6d"),
];
/// Official tarball holding the files above (folder `cifar-10-batches-bin/`).
pub const CIFAR10_TARBALL_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// MD5 of [`CIFAR10_TARBALL_URL`].
pub const CIFAR10_TARBALL_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
