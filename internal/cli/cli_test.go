package cli

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestVisible(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"plain text, accents: été, 서울":   "plain text, accents: été, 서울",
		"\x1b[2J\x1b[31mred":             `\x1b[2J\x1b[31mred`,
		"a\nb\rc\td\x7f":                 `a\nb\rc\td\x7f`,
		"\u202eevil\u202c \u2066x\u2069": `\u202eevil\u202c \u2066x\u2069`,
		"\u200f\u061c":                   `\u200f\u061c`,
		"bad \xff byte":                  `bad \xff byte`,
		"c1 \u009b31m":                   `c1 \u009b31m`,
	} {
		require.Equal(t, want, Visible(in), "%q", in)
	}
}
