import Histogram

/// Round-trip latencies in nanoseconds (HdrHistogram, 3 significant digits, up to 10 s) and the
/// count of completed operations.
struct LatencyRecorder {
    var histogram = Histogram<UInt64>(highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: .three)
    var completed = 0

    @inline(__always)
    mutating func record(_ nanoseconds: UInt64) {
        _ = histogram.record(max(1, nanoseconds))
        completed += 1
    }

    mutating func merge(_ other: LatencyRecorder) {
        histogram.add(other.histogram)
        completed += other.completed
    }

    func percentileMicros(_ p: Double) -> Double {
        histogram.totalCount == 0 ? 0 : Double(histogram.valueAtPercentile(p)) / 1_000
    }
}

/// One measured run: operations completed over a measured time, and their latencies.
struct Measurement {
    var recorder = LatencyRecorder()
    var seconds = 0.0

    var rate: Double { seconds > 0 ? Double(recorder.completed) / seconds : 0 }
    var p50: Double { recorder.percentileMicros(50) }
    var p99: Double { recorder.percentileMicros(99) }

    mutating func merge(_ other: Measurement) {
        recorder.merge(other.recorder)
        seconds += other.seconds
    }
}
