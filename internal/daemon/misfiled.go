package daemon

// reportMisfiled logs the state records stored under another name than
// their own. The state package passes them over, so none of them creates
// the device or region it names; they stay in the file for a look.
func (rs *restorer) reportMisfiled() {
	ms, err := rs.store.Misfiled()
	if err != nil {
		rs.log.Error("check state records", "err", err)
		return
	}
	for _, m := range ms {
		rs.log.Error("state record not restored: it is stored under one name and names another (the state file was edited or is damaged); "+
			"the "+m.Kind+" is left out, and its record stays in the state file until that name is used again",
			"kind", m.Kind, "key", m.Key, "name", m.Name, "state", rs.store.Path())
	}
}
