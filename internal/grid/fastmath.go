package grid

import "math"

// The ph kernel spends its time in log1p, exp and expm1. The functions here
// are table-driven versions of the first two, each a loop over a slice (no
// call per value: the compiler does not inline a function this size) and
// accurate to a few units in the last place, far inside the kernel's 1e-9 bound: the scheme
// is that of ARM's optimized-routines (exp.c, log.c), with the tables built
// at init from the math package.

// expTableBits is log2 of the number of entries of the exp table.
const expTableBits = 7

const (
	expN = 1 << expTableBits
	// expShift rounds x·N/ln2 to an integer in its low bits (0x1.8p52).
	expShift = 0x1.8p52
	// expInvLn2N is N/ln2; expNegLn2HiN + expNegLn2LoN is −ln2/N, the high
	// part with trailing zeros so that k·expNegLn2HiN is exact.
	expInvLn2N   = 0x1.71547652b82fep0 * expN
	expNegLn2HiN = -0x1.62e42fefa0000p-8
	expNegLn2LoN = -0x1.cf79abc9e3b3ap-47
	// expFastMax bounds |x| where expFast's result is a normal float.
	expFastMax = 708
)

// expTable holds, for j = 0..N-1, the bits of 2^(j/N) minus j<<(52-7), so
// that adding k<<(52-7) for k = q·N + j gives the bits of 2^q·2^(j/N).
var expTable [expN]uint64

// logTableBits is log2 of the number of entries of the log table.
const logTableBits = 7

const (
	logN = 1 << logTableBits
	// logOff splits a float's bits so that its mantissa part z lies in
	// [0x1.69555p-1, 0x1.69555p0) ≈ [0.707, 1.414), centred on 1.
	logOff = 0x3fe6955500000000
)

// logEntry is one subinterval of the log's reduced range: its centre c
// (a multiple of 2^-10, so that z − c is exact), 1/c and log(c).
type logEntry struct{ c, invc, logc float64 }

var logTable [logN]logEntry

func init() {
	for j := range expN {
		expTable[j] = math.Float64bits(math.Exp2(float64(j)/expN)) - uint64(j)<<(52-expTableBits)
	}
	for i := range logN {
		lo := math.Float64frombits(logOff + uint64(i)<<(52-logTableBits))
		hi := math.Float64frombits(logOff + uint64(i+1)<<(52-logTableBits))
		c := math.Round((lo+hi)/2*1024) / 1024
		if lo <= 1 && 1 < hi {
			c = 1 // near 1 the log is as accurate as r = z − 1 itself
		}
		logTable[i] = logEntry{c: c, invc: 1 / c, logc: math.Log(c)}
	}
}

// expTo sets dst[i] = e^src[i] within a few ulps; dst and src may be the
// same slice. Outside [−708, 708] (including NaN and ±Inf) it defers to
// math.Exp. The loop body is written out, not called, so that nothing but
// arithmetic runs per value.
func expTo(dst, src []float64) {
	dst = dst[:len(src)]
	for i, x := range src {
		if !(math.Abs(x) <= expFastMax) {
			dst[i] = math.Exp(x)
			continue
		}
		// x = k·ln2/N + r with |r| ≤ ln2/(2N).
		kd := x*expInvLn2N + expShift
		ki := math.Float64bits(kd)
		kd -= expShift
		r := x + kd*expNegLn2HiN + kd*expNegLn2LoN
		s := math.Float64frombits(expTable[ki%expN] + ki<<(52-expTableBits))
		// e^r to degree 5: the next term is below 2^-60 relative.
		r2 := r * r
		dst[i] = s * (1 + r + r2*(0.5+r*(1.0/6)+r2*(1.0/24+r*(1.0/120))))
	}
}

// log1pInPlace sets xs[i] = log(1+xs[i]) within a few ulps of the result,
// also near 0 (where log(1+w) ≈ w): it reduces 1+w rounded, adds back the
// rounding error of 1+w, and evaluates log(1+r) by its series for
// |r| < 0.012. Where 1+w is not a normal float below 2^1023 (w ≤ −1, NaN,
// huge w) it defers to math.Log1p.
func log1pInPlace(xs []float64) {
	for i, w := range xs {
		u := 1 + w
		ix := math.Float64bits(u)
		if ix-0x0010000000000000 >= 0x7fe0000000000000-0x0010000000000000 {
			xs[i] = math.Log1p(w)
			continue
		}
		// u = 2^k·z; 1+w = u + cc exactly.
		cc := w - (u - 1)
		tmp := ix - logOff
		e := &logTable[(tmp>>(52-logTableBits))%logN]
		k := int64(tmp) >> 52
		z := math.Float64frombits(ix - tmp&(0xfff<<52))
		scale := math.Float64frombits(uint64(1023-k) << 52) // 2^-k
		r := (z - e.c + cc*scale) * e.invc
		// log(1+r) to degree 8: the next term is below 2^-55 relative.
		r2 := r * r
		p := r + r2*(-0.5+r*(1.0/3)+r2*(-0.25+r*0.2+r2*(-1.0/6+r*(1.0/7)+r2*(-0.125))))
		xs[i] = float64(k)*math.Ln2 + e.logc + p
	}
}
