package grid

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseBBox(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    BBox
		wantErr string
	}{
		{name: "korea", in: "124,33,132,39", want: BBox{124, 33, 132, 39}},
		{name: "spaces allowed", in: " 124 , 33,132 ,\t39 ", want: BBox{124, 33, 132, 39}},
		{name: "negative and fractional", in: "-10.5,-20.25,10.5,20.25", want: BBox{-10.5, -20.25, 10.5, 20.25}},
		{name: "whole globe", in: "-180,-90,180,90", want: BBox{-180, -90, 180, 90}},
		{name: "three numbers", in: "1,2,3",
			wantErr: `bbox "1,2,3": want 4 comma-separated numbers LON_MIN,LAT_MIN,LON_MAX,LAT_MAX`},
		{name: "five numbers", in: "1,2,3,4,5",
			wantErr: `bbox "1,2,3,4,5": want 4 comma-separated numbers LON_MIN,LAT_MIN,LON_MAX,LAT_MAX`},
		{name: "empty", in: "",
			wantErr: `bbox "": want 4 comma-separated numbers LON_MIN,LAT_MIN,LON_MAX,LAT_MAX`},
		{name: "not a number", in: "124,abc,132,39",
			wantErr: `bbox "124,abc,132,39": lat_min "abc" is not a finite number; want 4 comma-separated numbers LON_MIN,LAT_MIN,LON_MAX,LAT_MAX`},
		{name: "empty field", in: "124,,132,39",
			wantErr: `bbox "124,,132,39": lat_min "" is not a finite number; want 4 comma-separated numbers LON_MIN,LAT_MIN,LON_MAX,LAT_MAX`},
		{name: "newline in input stays on one line", in: "1\n,2,3",
			wantErr: `bbox "1\n,2,3": want 4 comma-separated numbers LON_MIN,LAT_MIN,LON_MAX,LAT_MAX`},
		{name: "lon_min not less than lon_max", in: "130,33,124,39",
			wantErr: "bbox lon_min 130 must be less than lon_max 124"},
		{name: "lon_min equal to lon_max", in: "124,33,124,39",
			wantErr: "bbox lon_min 124 must be less than lon_max 124"},
		{name: "lat_min not less than lat_max", in: "124,39,132,33",
			wantErr: "bbox lat_min 39 must be less than lat_max 33"},
		{name: "lat above 90", in: "124,33,132,95", wantErr: "bbox lat_max 95 outside [-90,90]"},
		{name: "lat below -90", in: "124,-91,132,39", wantErr: "bbox lat_min -91 outside [-90,90]"},
		{name: "lon above 180", in: "124,33,180.5,39", wantErr: "bbox lon_max 180.5 outside [-180,180]"},
		{name: "lon below -180", in: "-200,33,132,39", wantErr: "bbox lon_min -200 outside [-180,180]"},
		{name: "NaN", in: "NaN,33,132,39", wantErr: "bbox lon_min NaN must be a finite number"},
		{name: "Inf", in: "124,33,132,+Inf", wantErr: "bbox lat_max +Inf must be a finite number"},
		{name: "overflow", in: "124,33,1e400,39",
			wantErr: `bbox "124,33,1e400,39": lon_max "1e400" is not a finite number; want 4 comma-separated numbers LON_MIN,LAT_MIN,LON_MAX,LAT_MAX`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseBBox(tt.in)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				require.NotContains(t, err.Error(), "\n")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.NoError(t, got.Validate())
		})
	}
}

func TestBBoxString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   BBox
		want string
	}{
		{name: "whole degrees", in: BBox{124, 33, 132, 39}, want: "124,33,132,39"},
		{name: "fractions", in: BBox{-0.05, 1.5, 0.1, 2.25}, want: "-0.05,1.5,0.1,2.25"},
		{name: "tiny", in: BBox{1e-7, 0, 2, 3}, want: "1e-07,0,2,3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, tt.in.String())
			back, err := ParseBBox(tt.in.String())
			require.NoError(t, err)
			require.Equal(t, tt.in, back)
		})
	}
}

func FuzzParseBBox(f *testing.F) {
	for _, s := range []string{"124,33,132,39", " -180 , -90 , 180 , 90 ", "1,2,3", "NaN,1,2,3", "1e400,0,1,1", "0x1p-2,0,1,1", ",,,", "1,2,1,2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBBox(s)
		if err != nil {
			if strContainsNewline(err.Error()) {
				t.Fatalf("ParseBBox(%q) error has a newline: %q", s, err)
			}
			return
		}
		if err := b.Validate(); err != nil {
			t.Fatalf("ParseBBox(%q) = %v, which does not validate: %v", s, b, err)
		}
		back, err := ParseBBox(b.String())
		if err != nil || back != b {
			t.Fatalf("ParseBBox(%q).String() = %q does not round-trip: %v, %v", s, b.String(), back, err)
		}
	})
}

func strContainsNewline(s string) bool {
	for _, c := range s {
		if c == '\n' || c == '\r' {
			return true
		}
	}
	return false
}
