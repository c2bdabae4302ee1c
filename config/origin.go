package config

// OriginKind says which layer last set a setting.
type OriginKind int

// The layers, lowest precedence first.
const (
	FromDefault OriginKind = iota
	FromFile
	FromEnv
	FromFlag
)

func (k OriginKind) String() string {
	switch k {
	case FromFile:
		return "file"
	case FromEnv:
		return "env"
	case FromFlag:
		return "flag"
	}
	return "default"
}

// Origin is where a setting's value came from.
type Origin struct {
	Kind OriginKind
	// Env is the variable, for FromEnv: CLAUDEFLARE_PORT, or PORT when the
	// daemon read the predecessor's name.
	Env string
	// File and Line locate the value, for FromFile; Line is 0 when unknown.
	File string
	Line int
}

// Origin says where the value of the setting key came from, as Load found
// it; FromDefault for a key no layer set, or a Config Load did not make.
func (c *Config) Origin(key string) Origin {
	return c.origins[key]
}

// Value returns the value of the setting key (a string, int, int64,
// float64, bool, Duration or []string); false when key is no setting.
func (c *Config) Value(key string) (any, bool) {
	s := settingByKey[key]
	if s == nil {
		return nil, false
	}
	return s.field(c).Interface(), true
}
