package format

import "errors"

// ErrCorrupt is wrapped by every error that reports an image inconsistent
// with itself or with the format, whether damaged or made to be hostile: a
// record that cannot be decoded, a link out of the volume, a partition that
// starts past the device's end. A device that fails to read is not
// corruption, and its errors do not wrap it. tfs/errors.go says which
// errno each error of the filesystem reaches the kernel as.
var ErrCorrupt = errors.New("corrupt image")
