import Testing
import YCSB

@Suite("SVG charts")
struct SVGChartTests {
    static let summary = RunSummary(
        phase: "run", workload: "a", threads: 1, seconds: 3,
        perOperation: [
            OperationSummary(
                kind: .read, count: 10, errors: 0, firstError: nil, notFound: 0, averageUs: 20, minUs: 5, maxUs: 90,
                p50Us: 18, p95Us: 40, p99Us: 80, p999Us: 90,
                cdf: [CDFPoint(percentile: 0, us: 5), CDFPoint(percentile: 50, us: 18), CDFPoint(percentile: 100, us: 90)]),
            OperationSummary(
                kind: .update, count: 10, errors: 0, firstError: nil, notFound: 0, averageUs: 30, minUs: 8, maxUs: 900,
                p50Us: 25, p95Us: 60, p99Us: 800, p999Us: 900,
                cdf: [CDFPoint(percentile: 0, us: 8), CDFPoint(percentile: 50, us: 25), CDFPoint(percentile: 100, us: 900)]),
        ],
        perSecond: [5, 10, 5])

    func count(_ needle: String, in text: String) -> Int { text.split(separator: "<", omittingEmptySubsequences: true).filter { $0.hasPrefix(needle) }.count }

    @Test("--plot draws one CDF line per operation and the throughput line, in one SVG document")
    func plot() {
        let svg = Self.summary.svgPlot(title: "eekv workload a")
        #expect(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
        #expect(svg.hasSuffix("</svg>\n"))
        #expect(count("polyline", in: svg) == 3)
        #expect(svg.contains(">READ<") && svg.contains(">UPDATE<") && svg.contains(">ops/s<"))
        // Log axis: decades from 1 µs to 1000 µs cover 5..900.
        #expect(svg.contains(">1<") && svg.contains(">1k<"))
        #expect(count("g ", in: svg) == 2)
    }

    @Test("bar charts draw a bar per group and series, and escape text")
    func bars() {
        let svg = SVGChart.document(
            width: 600, height: 300,
            panels: [
                SVGChart.Panel(
                    x: 0, y: 0,
                    body: SVGChart.bars(
                        title: "a < b & c", yLabel: "ops", groups: ["A", "B", "C"],
                        series: [("x", [1, 2, 3]), ("y", [4, 5, 6])], width: 600, height: 300))
            ])
        // Three groups × two series, plus the white background and two legend swatches.
        #expect(count("rect", in: svg) == 6 + 1 + 2)
        #expect(svg.contains("a &lt; b &amp; c"))
        #expect(!svg.contains("a < b"))
    }

    @Test("the run keeps the latency distribution of each operation, p0 to p100")
    func cdfPercentiles() {
        let s = Self.summary
        #expect(s.perOperation.allSatisfy { $0.cdf.first?.percentile == 0 && $0.cdf.last?.percentile == 100 })
    }
}
