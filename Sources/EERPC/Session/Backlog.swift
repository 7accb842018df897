/// A request waiting for a free slot of its session.
struct PendingRequest {
    var requestType: UInt8
    var request: MsgBuffer
    var response: MsgBuffer
    var continuation: Continuation
    var tag: UInt64
}

/// FIFO of requests waiting for a slot. A ring that doubles when full: it allocates only while
/// an application keeps more requests queued than it ever has before, never in steady state.
struct Backlog {
    private var storage: UnsafeMutablePointer<PendingRequest>? = nil
    private var capacity = 0
    private var head = 0
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    mutating func push(_ item: PendingRequest) {
        if count == capacity { grow() }
        (storage.unsafelyUnwrapped + (head + count) % capacity).initialize(to: item)
        count += 1
    }

    mutating func pop() -> PendingRequest? {
        guard count > 0 else { return nil }
        let item = (storage.unsafelyUnwrapped + head).move()
        head = (head + 1) % capacity
        count -= 1
        return item
    }

    /// Frees the ring; the caller has drained it (or drains it first).
    mutating func release() {
        while pop() != nil {}
        storage?.deallocate()
        storage = nil
        capacity = 0
        head = 0
    }

    private mutating func grow() {
        let newCapacity = max(16, capacity * 2)
        let new = UnsafeMutablePointer<PendingRequest>.allocate(capacity: newCapacity)
        for i in 0..<count { (new + i).moveInitialize(from: storage.unsafelyUnwrapped + (head + i) % capacity, count: 1) }
        storage?.deallocate()
        storage = new
        capacity = newCapacity
        head = 0
    }
}
