/// Faults a transport's receive path injects, as probabilities in [0, 1].
public struct FaultPlan: Sendable {
    public var drop: Double
    public var duplicate: Double
    public var reorder: Double
    /// One random bit of the packet flipped (damage on the wire, or a forgery).
    public var corrupt: Double
    public init(drop: Double = 0, duplicate: Double = 0, reorder: Double = 0, corrupt: Double = 0) {
        self.drop = drop
        self.duplicate = duplicate
        self.reorder = reorder
        self.corrupt = corrupt
    }
}

/// What a ``FaultInjectingTransport`` did, for tests to check the faults really happened.
public struct FaultCounts: Sendable, Equatable {
    public var dropped = 0
    public var duplicated = 0
    public var reordered = 0
    public var corrupted = 0
}

/// A transport wrapper that drops, duplicates, reorders and corrupts received packets at random
/// (seeded, so a failing run can be replayed). Wrapping both ends of a session injects faults in
/// both directions. Meant for tests and chaos runs: it copies every received packet.
public struct FaultInjectingTransport<Base: Transport & ~Copyable>: Transport, ~Copyable {
    public static var kind: TransportKind { Base.kind }

    public private(set) var base: Base
    public let plan: FaultPlan
    public private(set) var faults = FaultCounts()
    private var rng: SplitMix64

    // Delivered packets are copied into `slots` (owned here, freed in deinit). A reordered packet
    // is held in `held` and delivered after the next packet, possibly in a later burst.
    private let slotSize: Int
    private let slotCount: Int
    private let slots: UnsafeMutableRawPointer
    private let lengths: UnsafeMutablePointer<Int>
    private var count = 0
    private let heldBuffer: UnsafeMutableRawPointer
    private var heldLength: Int? = nil

    public init(_ base: consuming Base, plan: FaultPlan, seed: UInt64) {
        slotSize = (base.mtu + 64 + 63) & ~63
        slotCount = 3 * base.maxReceive + 2  // every packet duplicated, plus a held one
        slots = .allocate(byteCount: slotSize * slotCount, alignment: 64)
        lengths = .allocate(capacity: slotCount)
        heldBuffer = .allocate(byteCount: slotSize, alignment: 64)
        self.base = base
        self.plan = plan
        rng = SplitMix64(seed: seed)
    }

    deinit {
        slots.deallocate()
        lengths.deallocate()
        heldBuffer.deallocate()
    }

    public var mtu: Int { base.mtu }
    public var maxBurst: Int { base.maxBurst }
    public var maxReceive: Int { base.maxReceive }
    public var localRoute: RoutingInfo { base.localRoute }
    public var stats: TransportStats { base.stats }
    public func resolve(_ remote: RoutingInfo) -> RoutingInfo? { base.resolve(remote) }

    public mutating func transmit(_ items: UnsafePointer<TxItem>, count: Int) -> Int {
        base.transmit(items, count: count)
    }

    public mutating func waitForPackets(timeoutMs: Int32, doorbell: Int32) {
        if heldLength == nil { base.waitForPackets(timeoutMs: timeoutMs, doorbell: doorbell) }
    }

    public mutating func receive() -> Int {
        count = 0
        let n = base.receive()
        for i in 0..<n {
            let packet = UnsafeRawBufferPointer(base.received(i))
            if rng.chance(plan.drop) {
                faults.dropped += 1
                continue
            }
            if heldLength == nil && rng.chance(plan.reorder) {
                faults.reordered += 1
                let len = min(packet.count, slotSize)
                heldBuffer.copyMemory(from: packet.baseAddress!, byteCount: len)
                heldLength = len
                continue
            }
            deliver(packet)
            if rng.chance(plan.corrupt) && packet.count > 0 {
                faults.corrupted += 1
                let bit = Int(rng.next() % UInt64(packet.count * 8))
                let byte = slots + (count - 1) * slotSize + bit / 8
                byte.storeBytes(of: byte.load(as: UInt8.self) ^ UInt8(1 << (bit % 8)), as: UInt8.self)
            }
            if rng.chance(plan.duplicate) {
                faults.duplicated += 1
                deliver(packet)
            }
            if let len = heldLength {
                deliver(UnsafeRawBufferPointer(start: heldBuffer, count: len))
                heldLength = nil
            }
        }
        // A packet held with nothing behind it is still delivered, one burst late.
        if n == 0, let len = heldLength {
            deliver(UnsafeRawBufferPointer(start: heldBuffer, count: len))
            heldLength = nil
        }
        return count
    }

    public func received(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: slots + index * slotSize, count: lengths[index])
    }

    private mutating func deliver(_ packet: UnsafeRawBufferPointer) {
        guard count < slotCount else { return }
        let len = min(packet.count, slotSize)
        if len > 0 { (slots + count * slotSize).copyMemory(from: packet.baseAddress!, byteCount: len) }
        lengths[count] = len
        count += 1
    }
}

/// A small, fast, seedable generator (Steele et al., SplitMix64).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// True with probability `p`.
    public mutating func chance(_ p: Double) -> Bool {
        p > 0 && Double(next() >> 11) * 0x1p-53 < p
    }
}
