extension String {
    /// The text in a C function's NUL-terminated output buffer (an error message, a line read by
    /// `fgets`): the bytes before the first NUL, or all of them if there is none.
    public init(nulTerminated buffer: [CChar]) {
        let end = buffer.firstIndex(of: 0) ?? buffer.endIndex
        self = String(decoding: buffer[..<end].lazy.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
