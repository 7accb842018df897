import Synchronization

/// The buffer pool background handlers allocate their responses from. Background threads do not
/// own an Rpc's ``BufferPool``, so they share this one under a mutex. The dispatch thread only
/// touches it to give a background response back after the response is retired, off its fast
/// path for foreground requests.
public final class SharedBufferPool: Sendable {
    private let pool: Mutex<BufferPool>

    init(numaNode: Int) {
        pool = Mutex(BufferPool(numaNode: numaNode, origin: .sharedPool))
    }

    public func allocate(size: Int) -> MsgBuffer? {
        pool.withLock { $0.allocate(size: size) }
    }

    public func free(_ buffer: MsgBuffer) {
        pool.withLock { $0.free(buffer) }
    }
}
