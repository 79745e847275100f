package fusefs

// Inodes counts the devices the mount keeps an inode number for.
func Inodes(s *Server) int {
	s.x.mu.Lock()
	defer s.x.mu.Unlock()
	return len(s.x.inos)
}
