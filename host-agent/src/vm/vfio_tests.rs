//! VFIO pre-flight against a fake sysfs (written next).
