import CSystemShims

/// How the runtime runs a request handler.
public enum HandlerMode: Sendable {
    /// Inline on the dispatch thread: must be short and must not block.
    case foreground
    /// On one of the Nexus's background threads: may block or run long.
    case background
    /// On the dispatch thread, short and non-blocking like `foreground`, but with a handle like
    /// `background`'s: the request is copied into a runtime buffer that lives until the reply,
    /// and the reply may come later from any thread. For handlers that only pass the request on
    /// to a thread of their own (a storage writer), which would otherwise pay a background
    /// thread's hop for nothing.
    case deferred
}

/// A request handler. Runs once per request (the runtime dedupes retransmissions). It answers
/// with ``RequestHandle/respond(_:)``, now or later (from a background thread, or from the
/// dispatch thread for a foreground handler that defers). Prefer closures that capture nothing
/// and reach their state through ``RequestHandle/context``: a capture costs ARC traffic per call.
public typealias RequestHandler = @Sendable (RequestHandle) -> Void

struct HandlerEntry {
    var mode: HandlerMode
    var handler: RequestHandler
}

/// Called on the dispatch thread when an RPC completes. The client owns the request and
/// response buffers again from this point.
public typealias Continuation = (Completion) -> Void

/// Outcome of an RPC at the client.
public enum RpcStatus: Sendable, Equatable {
    case ok
    /// The response was larger than the response buffer given to `enqueueRequest`.
    case responseTooLarge(size: Int)
    /// The session failed or was torn down before the response arrived.
    case sessionFailed
    /// The server has no handler for the request type.
    case rejected
}

/// What a continuation receives.
public struct Completion {
    /// The endpoint, to enqueue more requests from the continuation.
    public unowned(unsafe) let rpc: RpcEndpoint
    public let session: Int
    public let tag: UInt64
    public let status: RpcStatus
    public let request: MsgBuffer
    /// The response, `size` set to the response's length.
    public let response: MsgBuffer
    public var context: UnsafeMutableRawPointer? { rpc.context }
}

/// A received request, handed to its handler.
///
/// Lifetime of `request`: for a single-packet request with a foreground handler it points into
/// the transport's receive ring (zero-copy) and is valid only while the handler runs; otherwise
/// it points into a runtime buffer valid until the handler calls `respond`.
public struct RequestHandle: BitwiseCopyable, @unchecked Sendable {
    // unowned(unsafe): the endpoint outlives every request it dispatched (it waits for
    // background handlers before it goes away), and this avoids ARC traffic per request.
    @usableFromInline unowned(unsafe) let endpoint: RpcEndpoint
    let slotIndex: Int
    let sessionToken: UInt64
    let requestNumber: UInt64
    let assembly: MsgBuffer?
    public let requestType: UInt8
    public let request: UnsafeRawBufferPointer
    public let isBackground: Bool
    /// A one-packet response buffer reserved for this request's slot (capacity = data per packet).
    public let preallocatedResponse: MsgBuffer

    /// The session number at the server.
    public var session: Int { slotIndex / Wire.sessionRequestWindow }
    /// The Rpc's application context (see ``RpcEndpoint/context``).
    public var context: UnsafeMutableRawPointer? { endpoint.context }

    /// A response buffer of `size` bytes, for responses larger than `preallocatedResponse`;
    /// nil beyond ``Wire/maxMessageSize``. The runtime frees it after the response is retired.
    public func allocateResponse(size: Int) -> MsgBuffer? {
        isBackground ? endpoint.sharedPool.allocate(size: size) : endpoint.allocate(size: size)
    }

    /// Gives back a buffer from ``allocateResponse(size:)`` that will not be sent (the handler
    /// failed after sizing its reply and answers with something else).
    public func discardResponse(_ buffer: MsgBuffer) {
        guard buffer.data != preallocatedResponse.data else { return }
        isBackground ? endpoint.sharedPool.free(buffer) : endpoint.free(buffer)
    }

    /// Sends `response` (its `size` bytes). Call exactly once per request. The runtime owns the
    /// buffer from here on and keeps it to answer retransmitted requests.
    public func respond(_ response: MsgBuffer) {
        let r = ServerResponse(
            slotIndex: Int32(slotIndex), sessionToken: sessionToken, requestNumber: requestNumber,
            response: response, assembly: assembly, preallocated: preallocatedResponse)
        if isBackground {
            endpoint.postBackgroundResponse(r)
        } else {
            endpoint.enqueueResponse(r)
        }
    }
}

extension RequestHandle {
    /// Sends `prefix` followed by `body` as the response, copied now: the bytes need to stay
    /// valid only during this call (a value read from a storage snapshot, say). On an encrypted
    /// session whose packets this thread seals itself, the copy *is* the encryption: every packet
    /// of the response is sealed straight from these bytes into the buffer the runtime keeps for
    /// it, instead of being copied there and sealed from there as each packet leaves. Otherwise
    /// (plaintext, or sealing in the AES pool) they are copied into a response buffer.
    ///
    /// Only a foreground handler runs on the dispatch thread, where sealing happens; from a
    /// background or deferred handle the bytes are copied into a response buffer, and sealed as
    /// they leave. Returns false, having sent nothing, if no buffer of that size is left or the
    /// response exceeds ``Wire/maxMessageSize``; the handler must still respond.
    public func respond(copying prefix: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer) -> Bool {
        let size = prefix.count + body.count
        guard size <= Wire.maxMessageSize else { return false }
        // Presealing needs the session's keys: a handle kept past its session's end (a foreground
        // handler answering later) takes the copy path, and enqueueResponse discards it as stale.
        if !isBackground && endpoint.presealsResponses(size: size)
            && endpoint.handleIsCurrent(slot: slotIndex, sessionToken: sessionToken, requestNumber: requestNumber)
        {
            guard
                let (buffer, phase) = endpoint.presealResponse(
                    slot: slotIndex, preallocated: preallocatedResponse, prefix: prefix, body: body)
            else { return false }  // out of buffers
            endpoint.enqueueResponse(
                ServerResponse(
                    slotIndex: Int32(slotIndex), sessionToken: sessionToken, requestNumber: requestNumber,
                    response: buffer, assembly: assembly, preallocated: preallocatedResponse, presealed: true,
                    presealedPhase: phase))
            return true
        }
        var response = preallocatedResponse
        if size > response.capacity {
            guard let b = allocateResponse(size: size) else { return false }
            response = b
        }
        if let p = prefix.baseAddress, prefix.count > 0 { ee_copy(response.data, p, prefix.count) }
        if let b = body.baseAddress, body.count > 0 { ee_copy(response.data + prefix.count, b, body.count) }
        response.resize(to: size)
        respond(response)
        return true
    }

    /// The handle of a request copied into a runtime buffer (`background` and `deferred`
    /// handlers): the buffer lives until the reply, which may come from any thread.
    init(
        endpoint: RpcEndpoint, slotIndex: Int, sessionToken: UInt64, requestNumber: UInt64, requestType: UInt8,
        copiedRequest: MsgBuffer, preallocatedResponse: MsgBuffer
    ) {
        self.init(
            endpoint: endpoint, slotIndex: slotIndex, sessionToken: sessionToken, requestNumber: requestNumber,
            assembly: copiedRequest, requestType: requestType,
            request: UnsafeRawBufferPointer(start: copiedRequest.data, count: copiedRequest.size), isBackground: true,
            preallocatedResponse: preallocatedResponse)
    }
}

/// A response on its way from a handler to the dispatch thread.
struct ServerResponse: BitwiseCopyable {
    var slotIndex: Int32
    var sessionToken: UInt64
    var requestNumber: UInt64
    var response: MsgBuffer
    var assembly: MsgBuffer?
    /// The slot's preallocated buffer at dispatch time: if the session is gone by the time the
    /// response arrives, it is freed with the response.
    var preallocated: MsgBuffer
    /// `response` holds sealed packets (``RequestHandle/respond(copying:_:)``), under the key of
    /// this phase.
    var presealed = false
    var presealedPhase = false
}

/// A request on its way from the dispatch thread to a background thread.
struct BackgroundRequest: BitwiseCopyable {
    var endpoint: Unmanaged<RpcEndpoint>
    var slotIndex: Int32
    var sessionToken: UInt64
    var requestNumber: UInt64
    var requestType: UInt8
    var request: MsgBuffer
    var preallocated: MsgBuffer
}

/// Session lifecycle events, delivered on the dispatch thread.
public enum SessionEvent: Sendable, Equatable {
    case connected(session: Int)
    case connectFailed(session: Int, SessionError)
    case disconnected(session: Int)
}
