/// Per-Rpc message-buffer allocator: power-of-two size classes, each an intrusive free list
/// over slabs mapped on the Rpc's NUMA node. Not thread-safe: only the Rpc's dispatch thread
/// uses it. After warm-up, allocate and free are a few loads and stores with no system call
/// and no malloc; new slabs are mapped only when a class runs dry.
public struct BufferPool: ~Copyable {
    /// Smallest class capacity (2^6 = 64 bytes) and largest (8 MiB, the message limit).
    static let minClassShift = 6
    static let maxClassShift = 23
    static let classCount = maxClassShift - minClassShift + 1
    /// Slabs are at least this big, so small classes are refilled in bulk.
    static let minSlabSize = 2 << 20

    let numaNode: Int
    let origin: MsgBuffer.Origin
    /// Head of each class's free list; a free block's first 8 bytes link to the next one.
    private let freeHeads: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    /// Every slab mapped, so deinit can unmap them. Grows only when a new slab is mapped.
    private var slabs: [(UnsafeMutableRawPointer, Int)] = []
    public private(set) var mappedBytes = 0

    init(numaNode: Int, origin: MsgBuffer.Origin = .endpointPool) {
        self.numaNode = numaNode
        self.origin = origin
        freeHeads = .allocate(capacity: Self.classCount)
        freeHeads.initialize(repeating: nil, count: Self.classCount)
        slabs.reserveCapacity(64)
    }

    deinit {
        for (p, size) in slabs { MemoryRegion.unmap(p, size: size) }
        freeHeads.deallocate()
    }

    @inline(__always)
    static func sizeClass(for size: Int) -> Int {
        let needed = max(size, 1 << minClassShift)
        let shift = Int.bitWidth - (needed - 1).leadingZeroBitCount
        return shift - minClassShift
    }

    @inline(__always)
    static func blockSize(ofClass c: Int) -> Int {
        MsgBuffer.headroom + (1 << (c + minClassShift)) + MsgBuffer.tailroom
    }

    /// A buffer of at least `size` bytes with `size` set, or nil when `size` exceeds
    /// ``Wire/maxMessageSize`` or memory is exhausted.
    public mutating func allocate(size: Int) -> MsgBuffer? {
        guard size >= 0 && size <= Wire.maxMessageSize else { return nil }
        let c = Self.sizeClass(for: size)
        if freeHeads[c] == nil && !refill(sizeClass: c) { return nil }
        let block = freeHeads[c].unsafelyUnwrapped
        freeHeads[c] = block.load(as: UnsafeMutableRawPointer?.self)
        return MsgBuffer(
            data: block + MsgBuffer.headroom, capacity: 1 << (c + Self.minClassShift), size: size,
            sizeClass: UInt8(c), origin: origin)
    }

    /// Gives a buffer back. It must have come from this pool and must not be used again.
    public mutating func free(_ buffer: MsgBuffer) {
        precondition(buffer.origin == origin, "MsgBuffer freed to a pool that did not allocate it")
        let c = Int(buffer.sizeClass)
        let block = buffer.data - MsgBuffer.headroom
        block.storeBytes(of: freeHeads[c], as: UnsafeMutableRawPointer?.self)
        freeHeads[c] = block
    }

    /// Pre-maps enough blocks of the class for `size` that `count` allocations succeed without
    /// mapping (used at start-up for the buffers the dispatch loop needs in steady state).
    public mutating func reserve(size: Int, count: Int) {
        var held: [MsgBuffer] = []
        held.reserveCapacity(count)
        for _ in 0..<count { if let b = allocate(size: size) { held.append(b) } }
        for b in held { free(b) }
    }

    private mutating func refill(sizeClass c: Int) -> Bool {
        let block = Self.blockSize(ofClass: c)
        let want = max(block, Self.minSlabSize)
        guard let (slab, mapped) = MemoryRegion.map(size: want, numaNode: numaNode) else { return false }
        slabs.append((slab, mapped))
        mappedBytes += mapped
        var offset = 0
        while offset + block <= mapped {
            let p = slab + offset
            p.storeBytes(of: freeHeads[c], as: UnsafeMutableRawPointer?.self)
            freeHeads[c] = p
            offset += block
        }
        return true
    }
}
