import CSystemShims

/// A message buffer: a trivial handle over pool memory, so passing one around costs no ARC.
///
/// Memory layout of one pool block:
/// ```
/// [ headroom 64 B | data: capacity bytes (rounded up to 64) | tail room 64 B ]
///                 ^ `data`
/// ```
/// The headroom holds the 16-byte eeRPC header right before the data (at `data - 16`) and, before
/// that, room for the 42 bytes of Ethernet/IPv4/UDP an AF_XDP transport writes itself. The tail
/// room holds the 16-byte AEAD tag of a single-packet message, so a one-packet message can be
/// sealed in place and sent as one contiguous frame.
///
/// Ownership: the block belongs to the pool that allocated it (an Rpc's ``BufferPool`` or the
/// Nexus's ``SharedBufferPool``) and lives until it is given back with `free`. A `MsgBuffer` is
/// only a view: copying it does not copy or retain the memory, so exactly one party may free it.
@frozen
public struct MsgBuffer: BitwiseCopyable, @unchecked Sendable {
    /// Bytes reserved before `data` in every block.
    public static let headroom = 64
    /// Bytes reserved after the capacity in every block.
    public static let tailroom = 64

    /// First application byte. Valid for `capacity` bytes while the buffer is allocated.
    public let data: UnsafeMutableRawPointer
    /// Largest `size` this buffer can take.
    public let capacity: Int
    /// Bytes of application data in use (what is sent, or what was received).
    @usableFromInline var _size: Int
    public var size: Int { _size }
    @usableFromInline let sizeClass: UInt8
    @usableFromInline let origin: Origin

    @usableFromInline
    enum Origin: UInt8, Sendable, BitwiseCopyable {
        case endpointPool = 0
        case sharedPool = 1
    }

    @usableFromInline
    init(data: UnsafeMutableRawPointer, capacity: Int, size: Int, sizeClass: UInt8, origin: Origin) {
        self.data = data
        self.capacity = capacity
        self._size = size
        self.sizeClass = sizeClass
        self.origin = origin
    }

    /// Sets the number of bytes in use, without touching the contents.
    /// - Precondition: `0 <= newSize <= capacity`.
    @inlinable
    public mutating func resize(to newSize: Int) {
        precondition(newSize >= 0 && newSize <= capacity, "MsgBuffer.resize beyond capacity")
        _size = newSize
    }

    /// The bytes in use. Do not escape the pointer beyond the buffer's life.
    @inlinable
    public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: data, count: size) }

    /// Copies `source` into the buffer and sets `size` to its length.
    /// - Precondition: `source.count <= capacity`.
    @inlinable
    public mutating func assign(_ source: UnsafeRawBufferPointer) {
        precondition(source.count <= capacity, "MsgBuffer.assign beyond capacity")
        if let base = source.baseAddress, source.count > 0 { ee_copy(data, base, source.count) }
        _size = source.count
    }
}
