import CSystemShims

extension Array where Element == UInt8 {
    /// A copy of `bytes` (a payload, or a value out of one) made with `ee_copy`: glibc's own copy
    /// runs 20 times slower for some placements of the new array on AMD CPUs (see `ee_copy`).
    public init(copying bytes: UnsafeRawBufferPointer) {
        self.init(unsafeUninitializedCapacity: bytes.count) { buffer, count in
            if let source = bytes.baseAddress, bytes.count > 0 { ee_copy(buffer.baseAddress!, source, bytes.count) }
            count = bytes.count
        }
    }
}
