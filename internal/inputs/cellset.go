package inputs

// cellSet is a set of grid ids, kept as bitmaps of 512 consecutive ids
// allocated as ids arrive. Its memory grows with the blocks the ids touch,
// not with the lattice: the 480,000 cells of the 0.01° Korea grid (600 rows
// of 800 consecutive ids) take about 1,200 blocks of 64 bytes. A file of
// scattered cells costs at most one block per row. The zero value is an
// empty set.
type cellSet struct {
	blocks  map[int64]*[8]uint64
	lastKey int64
	last    *[8]uint64 // the block of lastKey: rows usually come in id order
}

// add adds id and reports whether it was new.
func (s *cellSet) add(id int64) bool {
	key := id >> 9
	b := s.last
	if b == nil || key != s.lastKey {
		if s.blocks == nil {
			s.blocks = make(map[int64]*[8]uint64)
		}
		b = s.blocks[key]
		if b == nil {
			b = new([8]uint64)
			s.blocks[key] = b
		}
		s.last, s.lastKey = b, key
	}
	w, bit := (id>>6)&7, uint64(1)<<(id&63)
	if b[w]&bit != 0 {
		return false
	}
	b[w] |= bit
	return true
}
