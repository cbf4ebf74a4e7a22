//! The rule set: every rule the screen applies, as data.
//!
//! A rule fires when one of its `patterns` (see [`crate::pattern`] for the
//! syntax) matches inside one clause of the normalised message, none of its
//! `unless` patterns match in that clause (accidents, idioms, games), and,
//! if it lists any `with` patterns, one of those matches somewhere in the
//! message. Then, in [`crate::screen`]:
//! - a negation cue ([`NEGATION_CUES`]) up to [`NEGATION_WINDOW`] words
//!   before the match, in the same clause, turns the hit into `low`
//!   ("I'm not suicidal", "I would never kill myself": no escalation, the
//!   reply may check in gently), unless the cue is a pseudo-negation
//!   ("can't stop", "not sure", "not okay");
//! - a historical marker ([`HISTORICAL_MARKERS`]) in the clause with no
//!   current marker ([`CURRENT_MARKERS`]) turns it into `low` too ("I
//!   self-harmed as a teenager");
//! - an imminence marker ([`IMMINENCE`]) anywhere in the message raises a
//!   live suicide, self-harm or harm-to-others hit to `imminent`.
//!
//! Change a rule, add its case to the unit tests and run the screening set
//! (`cargo test -p safety-screen`); bump [`RULESET`] when behaviour changes.

use crate::screen::{Category, Severity};

/// Name and version of this rule set, reported with every assessment.
pub const RULESET: &str = "therapy-safety-rules/1";

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub id: &'static str,
    pub category: Category,
    pub severity: Severity,
    pub description: &'static str,
    pub patterns: &'static [&'static str],
    pub unless: &'static [&'static str],
    pub with: &'static [&'static str],
}

const fn rule(
    id: &'static str,
    category: Category,
    severity: Severity,
    description: &'static str,
    patterns: &'static [&'static str],
) -> Rule {
    Rule { id, category, severity, description, patterns, unless: &[], with: &[] }
}

impl Rule {
    const fn unless(mut self, unless: &'static [&'static str]) -> Rule {
        self.unless = unless;
        self
    }
    const fn with(mut self, with: &'static [&'static str]) -> Rule {
        self.with = with;
        self
    }
}

/// A marker that changes the severity of other hits.
#[derive(Debug, Clone, Copy)]
pub struct Marker {
    pub id: &'static str,
    pub description: &'static str,
    pub patterns: &'static [&'static str],
}

/// Named word lists used as `@name` in patterns.
pub const SETS: &[(&str, &str)] = &[
    // People someone might threaten or hurt (after an optional determiner).
    ("rel", "boss|manager|wife|husband|partner|ex|ex_wife|ex_husband|exwife|exhusband|mum|mom|mother|dad|father|\
             stepfather|stepdad|stepmother|stepmum|stepmom|brother|sister|son|daughter|stepson|stepdaughter|kid|kids|\
             child|children|baby|toddler|newborn|roommate|flatmate|housemate|neighbour|neighbor|neighbours|neighbors|\
             teacher|teachers|coworker|coworkers|colleague|colleagues|boyfriend|girlfriend|fiance|fiancee|friend|friends|\
             family|parents|classmate|classmates|students|bully|bullies|cousin|uncle|aunt|grandma|grandmother|\
             grandfather|grandad|grandpa|nephew|niece|coach|doctor|therapist|landlord|carer|caregiver|priest|pastor|\
             guy|man|woman|girl|boy|person|people|guys|men|women|whole_family|whole_class|customers|patients|kids_in*|cat|dog"),
    ("det", "my|the|his|her|their|our|that|this|those|these|a|your"),
    // Pronouns and collective targets.
    ("pron", "him|her|them|someone|somebody|anyone|anybody|people|everyone|everybody|you|strangers"),
    // Acts of violence against someone (intent form).
    ("violent", "kill|killing|murder*|stab*|slash*|shoot|shooting|strangl*|chok*|hurt|hurting|harm|harming|beat|beating|\
                 attack*|poison*|punch*|smother*|drown|drowning|tortur*|batter*|assault*|maim*|slit|bash*|knife|knifing|\
                 slap*|hit|hitting|smack*|rape|raping|injure|injuring|bludgeon*|cripple"),
    // Wanting, planning, imagining, being about to.
    ("intent", "want*|wanna|going_to|gonna|will|would|should|plan|plans|planned|planning|intend*|thinking_of|\
                picture|picturing|see_myself|visualis*|visualiz*|\
                thinking_about|think_about|thought_about|thoughts_of|thoughts_about|imagin*|fantasi*|urge*|could|might|\
                feel_like|tempted|ready_to|about_to|dream*|keep_thinking|scared_i|afraid_i|worried_i|going_to_go|desire*|need_to"),
    // Subjects that can abuse the user.
    ("subj", "he|she|they|someone|somebody"),
    // Acts done to the user by an abuser (object `me` follows).
    ("abusev", "hits|hit|hitting|beats|beat|beating|slaps|slapped|slapping|punches|punched|punching|kicks|kicked|\
                kicking|chokes|choked|choking|strangles|strangled|strangling|shoves|shoved|throttles|throttled|burns|burned|\
                whips|whipped|whipping|bites|bit|smacks|smacked|abuses|abused|abusing|rapes|raped|raping|molests|molested|\
                molesting|assaults|assaulted|assaulting|hurts|hurting|drags|dragged|locks|locked|starves|starved|\
                threatens|threatened|threatening|stalks|stalking|stalked|grabs|grabbed|beat_up|beats_up|pinned|pins|\
                headbutted|stabbed|cut|burnt|tortures|tortured|belts|belted"),
    // Ways of going on living (after "no point", "no reason", ...).
    ("live", "living|live|go_on|going_on|keep_living|keep_going|be_alive|being_alive|stay_alive|staying_alive|exist|\
              existing|be_here|being_here|carry_on|carrying_on|wake_up|waking_up|life|continue|continuing|get_up|getting_up"),
    // Being gone (after "if I", "when I", "nobody would care if I").
    ("gone", "gone|dead|died|die|disappeared|disappear|vanished|vanish|not_here|not_around|was_not_here|were_not_here|did_not_exist|never_existed|killed_myself|left_for_good|no_longer_here|not_alive"),
    // Things a person might be "better off" without.
    ("better", "better|happier|easier|lighter|fine|okay|ok|relieved|freer|calmer|safer|simpler|less_stressed|richer"),
    // Means of suicide (for "staring at", "holding", "bought").
    ("means", "pills|tablets|rope|noose|gun|knife|blade|razor|razors|bridge|tracks|ledge|edge|cliff|overdose|bleach|belt|cord|ledge|balcony"),
    // Medicines and pills.
    ("meds", "pills|pill|tablets|tablet|capsules|paracetamol|acetaminophen|tylenol|ibuprofen|aspirin|painkillers|meds|\
              medication|medications|medicine|antidepressants|antidepressant|sertraline|fluoxetine|citalopram|\
              sleeping_pills|sleeping_tablets|insulin|lithium|xanax|valium|diazepam|oxycodone|codeine|tramadol|\
              opioids|benzos|zopiclone|ambien|prozac|seroquel|quetiapine|amitriptyline|of_my"),
    // Games and contests, where "kill", "beat", "murder" are idioms.
    ("games", "chess|game|games|gaming|match|race|tennis|golf|cards|poker|football|soccer|fifa|fortnite|scrabble|\
               monopoly|quiz|competition|tournament|round|level|score|record|points|video|videogame|\
               pool|darts|squash|badminton|basketball|boxing_match|sparring|paintball|laser_tag|sims|beat_me_in_the_argument|won_the_argument"),
    // Body parts where self-injury is done.
    ("body", "wrist|wrists|arm|arms|forearm|forearms|thigh|thighs|leg|legs|skin|stomach|belly|body|hip|hips|\
              ankle|ankles|chest|hand|hands|face|shoulder|shoulders|side|sides"),
    // Accidents and everyday contexts where "cut/burn/hurt myself" is no self-harm.
    ("accident", "shaving|shave|chopping|cooking|kitchen|oven|stove|hob|pan|kettle|iron|curling|accident|accidentally|\
                  accidental|by_mistake|slipped|slip|tripped|fell|falling|gym|playing|football|running|lifting|workout|\
                  training|sport|sports|paper|onion|onions|garden|gardening|diy|hiking|climbing|bike|cycling|sunburn|\
                  sunburnt|in_the_sun|knife_slipped|clumsy|silly_me|ouch|plaster|band_aid|cooking_dinner|baking"),
];

use Category::*;
use Severity::*;

/// The rules, in evaluation order. Ids are stable: never reuse one.
pub const RULES: &[Rule] = &[
    // ---- suicide -------------------------------------------------------------
    rule("SUI-001", Suicide, High, "Stated wish, intent or act of killing oneself or ending one's life", &[
        "kill|killing|kil myself|meself",
        "end|ending|take|taking|took [my] own life",
        "end|ending|take|taking my life",
        "off myself",
        "commit|committing suicide",
        "suicide attempt|attempts",
    ]).unless(&["laughing|laugh|laughed"]),
    rule("SUI-002", Suicide, High, "Feeling suicidal, suicidal thoughts, thinking about suicide", &[
        "feel*|am|is|are|was|been|be|get*|becoming|so|very|really|quite|pretty|extremely|badly|actively|passively|and suicidal",
        "suicidal thoughts|thought|ideation|feelings|feeling|urges|urge|again|thinking|lately|tonight|today",
        "thinking|think|thought|thoughts|considering|considered|contemplat*|obsessing|fantasi* about|of suicide|dying|ending_it|ending_it_all|ending_things|ending_my_life|taking_my_life|not_being_alive|not_being_here|not_existing",
        "attempt|attempting|try|trying|plan|planning|want_to|going_to suicide",
        "suicide .. plan|note|method|again|constantly|every_day|a_lot|all_the_time",
        "suicidal",
    ]).unless(&["prevention|awareness|hotline|lifeline|documentary|film|movie|podcast|article|book|course|training|research|statistics|rates"]),
    rule("SUI-003", Suicide, Moderate, "Wish to be dead or not to exist (passive ideation)", &[
        "want*|wanna|wish|ready .. to die|be_dead|not_exist|not_be_alive|stop_existing|not_live|not_be_here|cease_to_exist|disappear_forever|sleep_forever|fall_asleep_forever",
        "want* [to] die",
        "wish .. dead|never_been_born|never_born|not_alive|could_die|would_die|not_here|could_disappear|not_wake_up|never_wake_up|not_exist|did_not_exist|was_gone|were_gone|could_just_die|would_just_die|could_just_disappear",
        "wish|hope|want|pray* .. never|not wake up",
        "sleep and never|not wake up",
        "sleep|asleep forever",
        "disappear* forever|for_good|permanently",
        "stop|stopped|stopping|quit existing",
        "@better|best to [just] not exist|die|disappear|be_dead|not_be_here|not_wake_up|not_be_alive|end_it|be_gone|vanish",
        "want|need|wish|hope .. pain|it|everything|this|suffering|hurting .. to end|stop|go_away .. forever|permanently|for_good",
        "end|stop the|this|my pain .. forever|permanently|for_good",
        "feel|feeling|so|am trapped|stuck .. no way out|no_escape|only_way_out",
        "no way out|escape .. except|but|other_than|apart_from",
        "only way out|to_escape|to_make_it_stop",
        "cease|ceased to exist",
        "not exist any_more|at_all",
        "rather be_dead|die",
        "better off dead",
        "death|dying|being_dead would_be|is|sounds|seems|feels|looks [like] [a|an] relief|better|easier|peaceful|nice|good|appealing|tempting|escape|welcome|like_a_relief|like_an_escape|like_peace",
        "pray* .. die|to_die|to_not_wake_up|for_death",
        "just want it to stop|end forever|for_good|permanently",
        "want it_all|everything to end|stop",
    ]).unless(&["die_of|died_of|dying_of|die_laughing|die_for|rather_die_than|rather_be_dead_than|to_die_for|die_alone|die_happy|die_before_i|die_old|wish_i_could_die_of|die_in_my_sleep_when_i_am_old"]),
    rule("SUI-004", Suicide, Moderate, "Does not want to live, cannot go on", &[
        "not want to live|exist|go_on|continue|keep_going|keep_living|be_alive|wake_up|be_around",
        "not want to be here|around any_more|any_longer|on_this_earth|in_this_world|at_all",
        "can not go on|keep_going|carry_on|do_this_any_more|take_it_any_more|cope_any_more|live_like_this|keep_living|go_on_living|take_this_any_more|do_it_any_more",
        "not sure|know|certain .. want to live|be_alive|go_on|be_here|keep_going|exist|keep_living|stay_alive|be_around|continue",
        "how_much_longer|how_long i can .. go_on|keep_going|do_this|hold_on|take_it|cope|last|survive",
        "tired|sick|exhausted|weary of living|being_alive|existing|life|being_here|breathing|waking_up",
        "no longer want to live|exist|be_alive|be_here|go_on",
        "not plan|planning|expect|think .. on|to|i_will be|being here|around|alive .. month|week|year|long|much_longer|next|by|for",
        "running|run|ran out of reasons",
        "reasons to live|stay|keep_going|go_on",
        "will_not|wo_not|never|not_think_i_will|not_sure_i_will|not_think_i_would make it to|past|through my|next|the .. birthday|christmas|new_year|year|summer|winter|month|anniversary",
        "i am done with life|living|everything|it_all|this_life|being_alive",
        "finally be at|in peace|free|gone|at_rest",
        "count*|counting down .. until|till .. peace|gone|over|free|the_end",
        "everything|it|the_world|life|it_all to go|fade|turn dark|black|quiet|silent .. forever|and_stay|stay_that_way|for_good|permanently",
        "no future for me",
        "checking|check|checked out .. soon|early|for_good|permanently|of_life|of_this_life|tonight",
        "updat*|wrote|writing|made|making|sort*|finalis*|finaliz* .. my will",
        "sort*|put*|putting|getting my affairs in order",
        "passwords|accounts .. for my|to_my .. brother|sister|mum|mom|dad|family|partner|husband|wife|kids",
        "@rel|kids|family|everyone|they .. better life|lives|off .. without me|with_a_different|with_someone_else|if_i_was_not|if_i_were_not",
        "give|giving|given up on life|living",
    ]).unless(&["live here|there|in|with|abroad|at|near|together|on_my_own|alone|nearby|closer|somewhere"]),
    rule("SUI-005", Suicide, Moderate, "No reason to live, life not worth living", &[
        "no point|reason|purpose .. @live",
        "not see [the|a|any] point|reason .. @live",
        "what is the point .. @live",
        "what is the point of|in anything|any_of_this|it_all|trying|going_on|life|me|carrying_on",
        "nothing|no_one|nobody to live for",
        "no reason to live",
        "not worth living",
        "life .. not worth it|living",
        "life is pointless|meaningless|not_worth_it",
        "why [should|do|would] i [even|still] bother living|staying_alive|being_alive|exist|existing",
        "why am i still alive|here",
    ]),
    rule("SUI-006", Suicide, Moderate, "Belief that others would be better off without them", &[
        "better off|of without me",
        "@better .. if|when i .. @gone|was_never_born|was_not_alive|were_not_alive",
        "not miss me .. if|when i .. gone|dead|died|disappeared",
        "nobody|no_one would [even] miss|notice|care .. if|when i .. @gone",
        "world|everyone|everybody|family|they|life .. @better .. without me",
        "@better off|of without me",
        "burden|problem .. much_longer|for_much_longer|soon|any_longer",
        "will_not|wo_not|not_going_to be a burden|be_a_problem|bother_anyone .. much_longer|for_long|soon|any_more|any_longer",
    ]),
    rule("SUI-007", Suicide, Moderate, "Farewells and putting affairs in order", &[
        "will not be around|here much_longer|for_much_longer|for_long|much_more|longer",
        "not going to be around|here much_longer|for_much_longer|for_long|longer",
        "giv*|gave .. my|all_my|away_my things|stuff|possessions|belongings|savings|pets|cat|dog .. away",
        "giv*|gave away my|all_my things|stuff|possessions|belongings|savings|pets",
        "giv*|gave away everything|all_my_things",
        "will not need .. where_i_am_going|after_tonight|after_this_week|when_i_am_gone",
        "after|once i am gone|dead|not_around|not_here|no_longer_here",
        "if i am|i_m not here|around|alive .. tomorrow|next|by|any_more|after",
        "if .. happens to me .. not your fault",
        "not your|anyone fault .. if|when i",
        "wrote|written|writing|left|leave [a] letters|notes|letter|note .. explaining|explain|why|goodbye|sorry|forgive|to_each|for_each|for_my_family|for_my_kids",
        "take care of my .. for me|when_i_am_gone|after_i_am_gone",
        "thank you for everything .. goodbye|sorry|bye|forgive",
        "sorry for everything",
        "wrote|written|writing|left|leave [a|my|the] suicide|goodbye|farewell note|notes|letter|letters",
        "said|say|saying my goodbyes|goodbye_to_everyone|final_goodbyes",
        "this is goodbye",
        "goodbye forever|world|cruel_world",
        "this is my last|final message|words|goodbye|post|note",
        "final goodbye|farewell",
        "last time .. talk|speak|hear|see .. me",
    ]),
    rule("SUI-008", Suicide, Moderate, "A note or letter written 'just in case' or to say goodbye", &[
        "wrote|written|writing|left|leave [a|my|the] note|notes|letter|letters",
    ]).with(&["just in case", "goodbye", "when i am gone", "after i am gone", "in case something happens", "for after", "my funeral"]),
    rule("SUI-009", Suicide, High, "Method, means or research into how to die", &[
        "jump* off|from|in_front_of|under .. bridge|building|roof|rooftop|train|cliff|balcony|tower|window|tracks|motorway|overpass|bus|lorry|truck|car|car_park",
        "hang|hanging|hanged myself",
        "noose",
        "slit my wrists|throat|wrist",
        "look*|research*|googl*|search*|read*|reading .. ways|how|methods|method .. to die|to_kill|to_end|to_overdose|to_hang|suicide|painless|kill_myself|end_it",
        "painless way*|death|method|methods",
        "lethal|fatal dose",
        "how many .. @meds .. kill|die|lethal|fatal|enough|take|it_would_take|would_take|does_it_take",
        "how long|how_quickly|how_fast .. take|takes|does_it_take .. to die|to_bleed_out|to_suffocate|hanging|overdose",
        "research*|look*|googl*|search*|find*|found|which|what .. highest|tallest|high_enough|deepest .. bridge|building|cliff|roof|car_park|tower|drop",
        "stood|standing|sat|sitting|climbed|lingered at|on|near|by [the] edge|ledge|railing|rail .. of .. platform|bridge|roof|cliff|building|balcony|tracks",
        "put|set|kept|keeping|saved|saving|hidden|hid aside|away|back .. enough|all|@meds",
        "enough .. @meds .. to make_sure|do_it|end_it|die|kill|for_it_to_work|to_work",
        "how easy|quick|simple it would be|to_end|to_die|to_jump|to_just",
        "train|railway tracks|line .. thought|think|thinking|wonder*|imagin*",
        "saved|saving|stockpil*|hoard*|collect*|stash* [up] .. @meds",
        "@meds .. saved|stockpiled|hoarded|stashed|collected",
        "bought|buy|got|getting|have|has|buying [a|some|the] rope|noose|ropes",
        "gun .. kill_myself|end_it|shoot_myself|in_my_mouth|to_my_head",
        "shoot myself",
        "drive|driving|crash* .. into .. wall|tree|traffic|lorry|truck|bridge",
        "step|walk|walking|stepping in_front_of .. train|bus|traffic|car|lorry|truck",
        "drown myself",
        "walk*|swim*|wade|wading into|out_into [the] sea|ocean|river|lake|waves|water",
        "hop*|hoping|want*|wish|pray* .. crash|crashes|hit_me|hits_me|run_me_over|not_survive|do_not_make_it_home|never_arrive|do_not_wake",
        "staring|stare|stared|looking|looked|holding|held .. at .. @means",
        "staring|holding|held|counting|counted|lined_up|lining_up .. @means|@meds",
        "carbon monoxide",
    ]).unless(&["bungee|bungy|swim|swimming|lake|river_for_fun|parachute|skydiv*|fanfic|fiction|character|novel|book|film|movie|show|climbing|camping|sailing|boat|tent|washing_line|skipping|jump_rope|swing|tug"]),
    rule("SUI-010", Suicide, High, "A plan or a decision to die", &[
        "made|have|got|making|make|planned [a] plan .. how|to_do_it|to_die|to_end|to_kill|do_it|to_go_through_with_it",
        "plan|plans|planned|planning|decided|deciding|ready to die|end_it|end_it_all|end_my_life|kill_myself|do_it_tonight",
        "decided|worked_out|figured_out|know|planned|chosen .. how|when|where ... do it|end_it|die|kill_myself",
        "decided|deciding|made_up_my_mind ... end_things|end_it|end_it_all|do_it|die|go_through_with_it|kill_myself|end_my_life",
        "going|ready|want|plan*|planning|about to end it|things|everything|it_all",
        "@intent|i_will .. take|swallow|down .. all|every|whole|entire .. @meds|prescription",
        "be done with it|it_all|everything|life .. tonight|today|soon|forever|for_good",
        "end it all|everything",
    ]).unless(&["with him|her|them|my|you|your|our", "relationship|between|contract|call|conversation|meeting|subscription|lease|job|marriage|engagement|friendship|chat|session|fast|diet|streak|argument|game|project|trip|holiday|semester|season|series|book|show|debate|discussion|feud"]),
    rule("SUI-011", Suicide, High, "A date picked, together with talk of dying", &[
        "picked|chosen|choose|set|pick [a|the] date|day",
    ]).with(&["plan", "do it", "die", "end it", "end things", "goodbye", "kill", "suicide", "pills", "rope", "life"]),
    rule("SUI-012", Suicide, Moderate, "Someone else is talking about killing themselves", &[
        "kill|killing herself|himself|themselves|themself",
        "end|ending|take|taking [her|his|their] [own] life",
        "@subj .. going_to|wants_to|want_to|will|threaten*|threatening|talking_about|talks_about .. end_it|end_her_life|end_his_life|end_their_life|suicide",
    ]).unless(&["killed|murder*|game|character|film|movie|show|book|novel"]),
    rule("SUI-013", Suicide, Low, "Bereavement by suicide (check in, not an emergency)", &[
        "killed|hanged herself|himself|themselves|themself",
        "died by|from|of suicide",
        "committed suicide",
        "took her|his|their own life",
        "lost .. to suicide",
    ]),
    // ---- self-harm -------------------------------------------------------------
    rule("SUI-014", Suicide, Moderate, "One's own death or non-existence, with a wish, relief, finality or means anywhere in the message (broad net)", &[
        "to die|be_dead|not_exist|not_be_alive|stop_existing|not_be_here|disappear_forever",
        "not|no_longer|never alive|exist|existing|be_here|be_around|wake_up|waking_up",
        "my own|my death|funeral|grave|suicide|ending|end",
        "i|me was|were|am|be|being gone|dead",
        "let_go|rest|sleep|disappear|vanish|drift_off|fade_away .. forever|for_good|permanently|for_ever|and_never_come_back",
        "end|ending it|things|everything|my_life|the_pain|this_pain",
        "how long|how_quickly|how_fast|how_much|what_dose .. die|death|kill|lethal|fatal|hanging|overdose|bleed_out",
        "use|using|point*|turn*|put* it|the_gun|the_knife|the_blade .. on|at|against|to myself|my_head|my_throat",
        "step*|jump*|throw*_myself|fall|falling|lean* .. off|from|over .. roof|rooftop|ledge|edge|bridge|building|balcony|cliff|railing|platform",
        "standing|stood|sitting|sat|climbed|climbing on|onto .. roof|rooftop|ledge|edge|bridge|balcony|cliff|railing",
        "said|say|saying bye|goodbye|goodbyes to everyone|to_everybody|to_all|to_people|to_everyone_i",
        "finish|end|complete what i started",
    ]).with(&["want*", "wish*", "wonder*", "imagin*", "think*", "thought", "relieved", "relief", "@better", "ready", "plan*", "going to", "tempted", "urge*", "hope*", "decided", "enough", "done", "tired", "forever", "for good", "permanently", "tonight", "goodbye", "bye", "last", "@means", "myself", "anymore", "any more"])
    .unless(&["scared|afraid|fear*|terrified|worried|anxious|phobia|fear_of .. die|dying|death|funeral|dead", "die_of|dying_to|die_laughing|die_for|die_happy|die_in_my_sleep|die_alone|die_old|to_die_for|die_young|die_before", "my own|my death .. certificate|metal|band|wish|will", "grandma|grandmother|grandad|grandfather|dad|mum|mom|father|mother|friend|uncle|aunt|cat|dog|pet|husband|wife|son|daughter|brother|sister|nan|granny .. funeral|grave|died|death|dead", "end|ending it|things .. with|between", "end the|this|my pain|hurting|suffering .. without|with_therapy|with_help|by_talking", "@games", "battery|phone|laptop|plant|plants|car|engine|battery_is|is_dead", "dead tired|beat|serious|set|sure|on_my_feet|end|last|certain|bored|wrong|right|good|funny|inside|weight|heat|centre|center|easy"]),
    rule("SH-001", SelfHarm, High, "Self-injury (act or urge) done to oneself", &[
        "cut|cutting|cuts|slit|slice*|slicing|carv*|burn|burns|burning|burned|burnt|scratch*|hurt|hurts|hurting|harm|harming|harmed|punish*|starv*|hit|hits|hitting|punch*|bang*|injur*|stab*|bruis*|bite|biting|mutilat*|scald*|strangl*|chok*|whip* myself",
    ]).unless(&["@accident", "hurt myself laughing", "cut myself off|out|free|loose|some_slack|a_break|a_slice|a_piece"]),
    rule("SH-002", SelfHarm, High, "Cutting, burning or scratching one's own body", &[
        "cut|cutting|cuts|slit|slice*|slicing|carv*|burn*|scratch*|stab*|gash*|scrap* .. my|into_my|on_my|up_my @body",
        "hit|hitting|hits|bang*|punch*|smash*|whack*|beat|beating .. my|myself @body|head|face .. with|against|until|when_i|hard",
    ]).unless(&["@accident", "opening|glass|broken|tin|can_opener|eczema|itch*|itchy|rash|mosquito|bites|allergy|hives|psoriasis", "cut my hair|fringe|nails|losses", "burn* my calories|energy|bridges|money|savings|food|toast|tongue", "cut off|cut_off_my", "cut* .. budget|spending", "hit*|bang*|whack* .. door|cupboard|table|desk|corner|shelf|ceiling|beam|car_door|cabinet"]),
    rule("SH-003", SelfHarm, High, "Self-harm named, relapse or urges to cut or burn", &[
        "self harm*|injur*|mutilat*|hurt|hurting|harmed",
        "cutting|burning again",
        "started|start|been|stop|stopped|keep|back_to cutting|burning",
        "relapse*|relapsing .. cut|cutting|harm|self_harm|burn|burning|cuts",
        "urge*|urging .. to cut|burn|bleed|self_harm|hurt_myself",
        "need|want* .. to cut|bleed",
        "going to cut|bleed",
        "cut tonight|today|again|deeper",
        "only thing .. help*|work*|calm* .. cutting|burning|hurting_myself|self_harm",
        "cutting|burning|hurting_myself|self_harming helps|is_the_only|calms|makes_me_feel|is_how_i_cope|is_how_i",
        "self inflicted",
        "scars|cuts|burns|marks|wounds ... made_myself|i_made|i_did|did_myself|did_to_myself|gave_myself|myself",
    ]).unless(&["cut* back|down|off|out|ties|corners|costs|class|school|loose|it_out|in|up_vegetables|the|my_hair|his_hair|her_hair|my_losses|my_nails|sugar|carbs|caffeine|alcohol|meat", "hair|haircut|fringe|lawn|grass|wood|paper|fabric|class|lecture|budget|pay|price|prices|salary|hours|shift|losses|cake|onion|onions|vegetables|bread|sandwich|ties|corners|costs", "burning out|burnt_out|burned_out|burnout|burning_the_candle|calories|fat|bridges|through|money|cash|savings|incense|wood|candles|candle|sage|bread|toast|dinner", "@accident", "no_self_harm_contract"]),
    rule("SH-004", SelfHarm, Moderate, "Wanting pain or injury, deserving to be hurt", &[
        "deserve to .. hurt|punished|suffer|feel_pain|in_pain|bleed|die",
        "want|need|wanted|needed to feel_pain|bleed|feel_physical_pain|feel_the_pain|be_in_pain|be_hurt|suffer",
        "make|made myself bleed|suffer|hurt|pay",
        "until|till .. bled|bleeds|bleeding|bleed|bruised|bruises|split|broke|cracked|swollen|raw",
        "slam*|punch*|bang*|smash*|hit*|hitting my fist|fists|head|hand|hands|knuckles .. into|against|on .. wall|walls|door|doors|mirror|floor|desk",
        "punch*|hit*|smash* walls|the_wall|a_wall|the_mirror .. until|over_and_over|till|again",
        "pull*|tear*|rip* [out] my hair [out] until|till|and_it_bleeds",
    ]).unless(&["@accident", "workout|gym|training|deserve_to_be_happy|blisters|shoes|marathon|ran|running|feet"]),
    rule("SH-005", SelfHarm, Moderate, "Keeping blades or razors for self-harm; hiding wounds", &[
        "keep|kept|hide|hiding|hidden|have|carry|carrying|stash*|bought|buy [a|my|the|some] blade|blades|razor|razors|razor_blade|razor_blades|sharpener_blade",
        "hid*|cover*|covering|covered .. cuts|scars|wounds|burns|marks .. sleeves|long_sleeves|from_everyone|from_my",
        "covered in|with fresh|new|deep cuts|wounds|burns|scratches",
        "fresh|new|deep cuts|wounds|burns on my|on_my",
        "hiding .. cuts|scars|wounds|burns|them_from_everyone",
    ]).unless(&["shaving|shave|beard|legs_for|budget|funding|jobs|staff|spending"]),
    rule("SH-007", SelfHarm, High, "Injuring oneself on purpose (overrides the accident exclusions)", &[
        "cut*|burn*|scratch*|hurt*|hit*|bang*|punch*|scald*|slice*|stab*|bruis* .. my|myself ... on_purpose|deliberately|intentionally|to_punish_myself|to_feel|to_feel_something|to_feel_better|so_i_would_feel",
        "on purpose|deliberately|intentionally .. cut*|burn*|scratch*|hurt*|hit*|bang*|punch*|scald*|slice*|stab* .. my|myself",
        "punch*|hit*|smash*|head_butt*|headbutt* [the|a] wall|walls|mirror|window|glass|door .. on_purpose|deliberately|to_hurt|until|to_feel",
        "took|take|taking|put|held|hold|pressed|press a|the|my razor|blade|knife|lighter|cigarette|iron|scissors|glass .. to|on|against|into my @body",
    ]),
    rule("SH-006", SelfHarm, High, "Taking pills or harmful substances on purpose", &[
        "took|taken|take|taking|swallowed .. @meds .. on_purpose|deliberately|intentionally|to_feel_something",
        "on purpose|deliberately|intentionally .. took|taken|swallowed|overdosed",
    ]),
    // ---- harm to others --------------------------------------------------------
    rule("HO-001", HarmToOthers, High, "Intent, urge or fantasy of hurting another person", &[
        "@intent .. @violent [up] @pron",
        "@intent .. @violent [up] @det @rel",
        "list .. people|names|kids|students|everyone .. i .. @intent .. @violent|get_back_at|get_even_with|make_pay",
        "people|names|kids|students|everyone|them .. i [really] want|plan|am_going to @violent",
        "@intent .. @violent [up] my|the|his|her|their .. kids|baby|children|son|daughter",
        "@intent .. @violent [up] [my] ex|exes",
        "@intent .. @violent|smash*|smashing|bash*|kick*|crush*|cave|caving .. his|her|their|your head|face|skull|throat|neck|teeth|brains",
        "make sure he|she|they never walk*|walks|breathe*|wake*|talk*|see*|hurt*_anyone .. again",
        "@intent .. @violent|beat|kick|knock|punch .. out_of [my|the|his|her|their|that] @rel|@pron",
        "@intent .. push*|shov*|throw|thrown|throwing .. @pron|@det .. in_front_of|off|down|into|over .. train|bridge|cliff|stairs|traffic|balcony|road|platform|tracks|edge|car|bus|window",
        "@intent|put|slip*|add*|spike|spiking .. poison|rat_poison|bleach|antifreeze|drugs|ground_glass .. in|into .. @det|his|her|their|@pron",
        "@intent .. bring|take|bringing|taking|carry .. gun|knife|weapon|rifle|bomb|machete|explosives .. to school|work|class|church|the_office|campus|the_party|the_mall",
    ]).unless(&["@games", "@violent .. feelings|feeling|chances|career|reputation|ego|pride|business|sales|team|mood|vibe|time|the_process|the_bug|the_project|joke|record|deadline|competition|diet|habit", "killed_it|kill_it|smash_it|beat_it|beat_them_to_it|beat_him_to_it|beat_her_to_it", "it|that|this|which|news|truth|what would|will|could|might|is_going_to @violent", "hit* .. up|back_up|a_message|with_a_text|with_a_message|with_the|up_for", "photo*|photograph*|camera|wedding|video|film|footage|pictures|portraits|hoops|message|email|text|line|dm"]),
    rule("HO-002", HarmToOthers, High, "Thoughts of mass violence", &[
        "shoot*|shot|bomb*|blow*|attack*|gas*|stab* up .. school|class|office|work|workplace|mall|church|mosque|synagogue|temple|concert|crowd|campus|college|university|party|station|subway|bus",
        "mass shooting|murder|killing",
        "kill|hurt|shoot|murder as many people",
    ]).unless(&["@games", "news|documentary|film|movie|show|book|article|history"]),
    rule("HO-003", HarmToOthers, High, "A weapon together with who it is for", &[
        "use it on|against @pron|@det",
        "know ... who ... use it on|against",
        "who ... going to use it",
    ]).with(&["gun", "knife", "weapon", "rifle", "pistol", "machete", "axe", "bat", "blade", "hammer", "poison", "acid"]),
    rule("HO-004", HarmToOthers, High, "Making someone suffer or pay (revenge)", &[
        "make @pron [all|both] suffer|pay|bleed|regret_it|beg",
        "make @det @rel [all|both] suffer|pay|bleed|beg",
        "@pron|he|she|they will [all|both] [be] hurt|suffer|bleed|pay .. like|for|as",
    ]).unless(&["bill|bills|rent|invoice|fine|tax|taxes|pay_for_dinner|pay_me_back|pay_back_the|paying_for"]),
    rule("HO-008", HarmToOthers, Moderate, "Wanting revenge on someone", &[
        "get|take|getting|taking|want|plotting|plan* revenge|my_revenge",
    ]).unless(&["@games", "revenge_of|revenge_porn|film|movie|show|book|novel|series|bedtime|procrastination"]),
    rule("HO-005", HarmToOthers, High, "Having hurt a child in one's care", &[
        "hit|hits|hitting|beat|beats|beating|slapped|slap|slapping|hurt|hurting|shook|shake|shaking|kicked|kicking|punched|punching|smacked|threw|choked|burned @det son|daughter|child|children|kids|kid|baby|toddler|stepson|stepdaughter|boy|girl|newborn|infant",
        "shake|shaking|shook the|my baby",
    ]).unless(&["feelings|feeling|pride|ego|chances|confidence|shower|party|birthday|hand|rattle"]),
    rule("HO-006", HarmToOthers, Moderate, "Intent to hurt an animal", &[
        "@intent|i_will .. kill|hurt|poison|drown|strangle|kick|tortur*|beat|strangl*|stab it|him|her|the_dog|the_cat|that_dog|that_cat|their_dog|their_cat|the_thing",
    ]).with(&["dog", "cat", "pet", "puppy", "kitten", "animal", "horse", "bird", "hamster"]).unless(&["@games", "kill it at|kill_it_at"]),
    rule("HO-007", HarmToOthers, High, "Setting fire to someone's home or car, running people over", &[
        "@intent .. set|burn* [down] [his|her|their|the|my|your|our] house|car|flat|home|place|apartment|building|room|office|school .. fire|down",
        "@intent .. set fire to",
        "@intent .. burn* down [his|her|their|the|my|your|our] .. house|car|flat|home|place|apartment|building|room|office|school",
        "@intent .. run @pron|@rel over|down",
        "@intent .. run over|down @pron",
        "@intent .. run|drive|push|force|ram* @pron|@det .. off_the_road|off_a_cliff|off_the_bridge|into_a_wall|into_traffic|into_a_ditch|off_the_road",
        "@intent .. run|drive|push|force|ram* [my|his|her|the] @rel .. off_the_road|off_a_cliff|off_the_bridge|into_a_wall|into_traffic|into_a_ditch",
        "@intent .. run @det @rel over|down",
        "@intent .. drive|driving into .. people|crowd|them|him|her",
    ]).unless(&["@games", "candle|bbq|barbecue|fireplace|campfire|fire_pit|the_grill|leaves|bonfire"]),
    // ---- abuse (harm from others) ------------------------------------------------
    rule("AB-001", Abuse, High, "Someone hits, hurts, assaults or locks up the user", &[
        "@subj ... @abusev me",
        "@det @rel ... @abusev me",
        "@subj|@rel ... push*|shov* me down|off|against|into|over|to_the_ground|to_the_floor",
        "@subj|@rel ... lock*|locked me in|up",
        "@subj|@rel ... hold*|held|pin*|pinned me down",
        "@subj|@rel ... throw*|threw .. at me",
    ]).unless(&["@games", "hit me up|hits_me_up", "hit me hard|hits_me_hard|hit_me_like|hits_me_like|hit_me_that|hits_me_that|it_hit_me|it_hits_me|hit_me_with_a_question|hit_me_with_the_news|hit_me_with_an_idea|hit_me_when_i_realised", "cut me off|out|some_slack|a_deal|short", "account|email|system|computer|laptop|app|website", "threw|throws|throw shade|compliments|questions|a_question|jokes|work|tasks|a_party", "kicked me out|kicks_me_out|kick_me_out|kicked_me_off_the", "dragged me to|along|drags_me_to|dragged_me_out", "locked me out by_accident", "grab* me a|grabbed_me_a|grabbed_me_some|grab_me_some|grabs_me_by_the_hand", "dog|cat|hamster|mosquito|puppy|kitten|horse|snake|spider .. bit|bites|bite me", "bit|bites me .. dog|cat|hamster|mosquito|puppy|kitten|horse|snake|spider", "burn* me out|burned_me_out|burnt_me_out", "beat me to|beats_me_to", "toy|toys|toddler|baby|playing|play_fight*|by_accident|accidentally|pillow_fight", "threaten* me with .. legal|lawsuit|court|leaving|divorce|fire|firing"]),
    rule("AB-002", Abuse, High, "Threats to hurt or kill the user", &[
        "threaten*|threatening to .. kill|hurt|beat|hit|stab|shoot|harm|murder|rape|take .. me|my|our|the_kids|the_children",
        "said|says|told_me|tells_me|threatened|swore [that] he|she|they [would|will|is_going_to|was_going_to] kill|hurt|murder|beat|stab|shoot|strangle|harm|rape me",
        "kill|hurt|beat|murder me if i .. leave|leave_him|leave_her|call_the_police|call_police|report|go_to_the_police|tell_anyone|tell_someone",
        "afraid|scared|terrified|frightened he|she|they will|is_going_to|would .. kill|hurt|beat|hit me",
    ]).unless(&["@games"]),
    rule("AB-003", Abuse, High, "Sexual abuse or assault", &[
        "rape|raped|raping|rapes|rapist",
        "sexually|sexual assault*|abus*|abuse|assaulted|harass*|touched|exploited",
        "molest*|grope*|groped|groping",
        "force*|forcing|made|makes|pressur* me .. sex|sexual|have_sex|touch_him|touch_her|send_nudes|sleep_with",
        "keeps|keep|always|kept touching|grabbing|groping me",
        "@subj|@rel ... touches|touched|touching me .. after|when|at_night|alone|in_private|in_the|privately|under|where|and",
        "touch* me .. way*|inappropriately|private*|down_there|at_night|where|sexual*|when_no_one|in_bed|under|when_mum",
        "send*|sent|sending me .. sexual|explicit|naked|nude|dirty|nudes",
        "sexual|explicit|naked|nude messages|photos|pictures|texts|pics",
        "do|does|did|doing things|stuff to me",
        "come*|came|coming into my room|bed .. at_night|when|while|and",
    ]).unless(&["documentary|film|movie|show|book|article|podcast|course|training|awareness|statistics"]),
    rule("AB-004", Abuse, High, "Being abused; unsafe at home", &[
        "abus* me",
        "being|am|been|getting|got abused|hurt_at_home|beaten",
        "is|was|are|gets|getting|becomes abusive",
        "abusive relationship|partner|husband|wife|boyfriend|girlfriend|parent|parents|dad|mum|mom|father|mother|home|household|stepdad|stepmum|carer|family",
        "scared|afraid|terrified|frightened|fear*|dread* [to|of] go|going|be|being [back] home",
        "not safe at home|with_him|with_her|with_them|in_my_own_home",
        "unsafe at home",
        "domestic violence|abuse",
    ]).unless(&["@games", "documentary|film|movie|show|book|article|podcast|course|training|awareness|statistics|substance|work_in|volunteer|charity|shelter|support_worker|caseworker|policy"]),
    rule("AB-005", Abuse, Moderate, "Coercive control and deprivation", &[
        "not let|allow|allows|lets me .. see|leave|go_out|talk_to|work|have_money|have_my_own|eat|sleep|use_the_phone|contact|call",
        "takes|took|controls|control|checks|steals|keeps|tracks|monitors .. my wages|money|pay|phone|bank|card|passport|benefits|messages|salary|location|pension|savings",
        "me .. without food|water|eating|meals",
        "without food|water for days|hours",
        "starves|starving|starved me",
        "not feed|feeding me",
    ]).with(&["he", "she", "they", "partner", "husband", "wife", "boyfriend", "girlfriend", "dad", "mum", "mom", "parents", "carer", "stepdad", "stepmum", "stepmom", "family", "brother", "sister", "uncle"]).unless(&["diet|fasting|fast|ramadan|doctor|surgery|gym"]),
    rule("AB-006", Abuse, High, "Stalking, being followed or waited for with a weapon", &[
        "stalk* me",
        "is|been|keeps stalking",
        "following me .. home|everywhere|work|around",
        "turned|turns|showed|shows|waiting .. up|outside .. my|work|house|school .. knife|gun|weapon|bat|machete",
    ]).unless(&["stalking my|his|her|your instagram|profile|page|socials|facebook|account|posts|tiktok|twitter|linkedin|stories"]),
    rule("AB-007", Abuse, High, "Punishment for telling; hiding injuries (child abuse)", &[
        "our little secret",
        "our secret|keep_it_between_us",
        "punish*|hurt|in_trouble|beat|kill .. if i tell|tell_anyone|tell_someone",
        "bruises|marks|injuries .. tell|hide|hiding|cover|social_worker|teacher|school|nurse",
    ]),
    rule("AB-009", Abuse, High, "Told to keep quiet about touching or hurting", &[
        "tells|told|said|says|warned|makes|made [me] not to tell anyone|anybody|no_one|nobody|mum|my_mum|my_mom|my_dad|my_parents|the_teacher|the_police|my_teacher|the_social_worker",
        "tells|told|said|says|makes|made|asks|asking|asked|wants|begs|begging me .. keep .. secret",
        "our relationship|it|this|what_we_do|what_happens a|our secret",
    ]).with(&["touch*", "hurt*", "hit*", "bruise*", "punish*", "sexual", "body", "bed", "night", "private", "naked"]),
    rule("AB-008", Abuse, Moderate, "Someone else is being hurt or abused", &[
        "is|are|been|keeps hurting|hitting|beating|abusing|neglecting|molesting|starving|slapping|punching|kicking her|him|them|my|the",
        "hurting|hitting|beating|abusing|neglecting her|him|them",
        "@det @rel .. is|are|was|were|being abused|beaten|hit|molested|neglected",
        "@det @rel|he|she|they ... hits|beats|hurts|abuses|kicks|punches|slaps|chokes|strangles|rapes|molests|threatens|hit|beat|slapped|punched|kicked|choked|raped her|him|them",
        "too scared|afraid|frightened|terrified to leave|go_home|tell_anyone|report_it|call_the_police",
        "@det @rel|he|she|they ... hits|beats|hurts|abuses|kicks|punches|slaps|chokes|molests|touches [my|his|her|our] [little|baby|younger|older|big|small] brother|sister|son|daughter|kids|children|child|mum|mom|mother|dad|baby|siblings|brothers|sisters",
    ]).unless(&["hurting|hitting|beating .. feelings|feeling|chances|career|reputation|ego|pride|business|sales|team|back|knee|leg|hip|head|eyes|ears", "@games"]),
    // ---- medical emergency -------------------------------------------------------
    rule("MED-001", MedicalEmergency, Imminent, "An overdose taken", &[
        "overdosed|overdosing",
        "took|taken|take|had|taking|have_taken|has_taken .. overdose",
        "overdose on",
    ]).unless(&["risk|prevention|awareness|film|movie|documentary|show|series|statistics|naloxone_training|crisis_in|chocolate|sugar|caffeine|coffee|netflix|tv|cake|candy|sweets|cheese|pizza|vitamin|vitamins"]),
    rule("MED-002", MedicalEmergency, Imminent, "Many pills or a whole pack swallowed", &[
        "took|taken|swallowed|ate|eaten|downed|had|taking|take|swallow [a|the|my|about|like|over] #many .. @meds",
        "swallowed|took|taken|drank|downed|ate|have_taken [a|the|my] whole|entire|full|complete bottle|packet|box|pack|strip|blister|tub|jar|prescription|supply",
        "took|taken|swallowed|downed|ate|taking .. too_many|loads|lots|handful|handfuls|bunch|load|lot|heap|fistful .. @meds",
        "swallowed|downed|ate all|everything .. @meds|prescription",
        "took|taken|swallowed .. @meds|prescription|supply .. at_once|in_one_go|all_together|all_at_once",
        "took|taken|swallowed|taking something|stuff|drugs|pills .. will_not|can_not|not wake|waking|breathing|responding",
        "took|taken|swallowed|downed .. way_too_many|too_much|double|triple|extra .. @meds",
    ]).unless(&["vitamin|vitamins|gummies|sweets|candy|candies|mints|photos|pictures|notes|steps|questions|breaks|days|classes", "mg|milligrams|mcg|ml|dose|prescribed|daily|a_day|per_day|as_directed"]),
    rule("MED-003", MedicalEmergency, Imminent, "Poison or a household chemical swallowed", &[
        "drank|drunk|swallowed|ate|eaten|drink|drinking|took|taken|swallow|drunken [some|a|the] bleach|antifreeze|poison|detergent|weed_killer|rat_poison|pesticide|drain_cleaner|cleaning_products|lighter_fluid|paraquat|weedkiller|ammonia|turpentine|battery_acid",
        "poisoned myself",
    ]),
    rule("MED-004", MedicalEmergency, Imminent, "Not breathing or cannot breathe", &[
        "can_not|struggling_to|unable_to|barely|hardly breathe|breath|breathing",
        "not|stopped breathing",
        "can not catch my|his|her breath",
        "lips|face|fingers|skin .. turning|going|gone|are|is blue|grey|gray",
        "turning|going|gone|went|turned blue|floppy|limp|grey|gray .. and|clutching|not|breath|chest|floppy|limp",
        "clutching|clutches|grabbing|grabbed|holding his|her|my chest",
        "throat .. swelling|swollen|closing|tight",
        "can not swallow",
        "anaphyla*",
        "choking",
    ]).unless(&["@games", "chocking|choking_on_my_words|choking_up|choked_up|choking_back", "last_year|years_ago|used_to|felt_like|feel_like", "laugh*"]),
    rule("MED-005", MedicalEmergency, Imminent, "Someone unconscious, unresponsive or collapsed", &[
        "unconscious|unresponsive|unrousable",
        "not|barely responsive",
        "not|barely responding to_me|at_all|to_anything|to_his_name|to_her_name|to_my_voice|when_i",
        "not waking up",
        "will_not|can_not wake up|wake_him|wake_her|wake_them",
        "collapsed|collapses|passed_out_and|blacked_out_and",
        "can not wake",
    ]).unless(&["for_school|for_work|in_the_morning|early|on_time|before_noon|til|till|until|alarm|weekends|afternoon|from_naps|from_his_nap|from_her_nap", "deal|plan|plans|business|company|market|marriage|relationship|bridge|tent|roof|project|economy|sofa|couch|into_bed|in_bed|on_my_bed|exhausted|laughing|talks|negotiations|building|team|stock|soufflé|souffle|cake|pile"]),
    rule("MED-006", MedicalEmergency, Imminent, "Heavy bleeding", &[
        "bleeding|bleed .. a_lot|heavily|badly|will_not_stop|profusely|everywhere|out|so_much|loads|non_stop|to_death|from_my_head|really_bad|lots",
        "blood .. everywhere|gushing|pouring|spurting|will_not_stop|won_t_stop|all_over",
        "gushing|pouring|spurting|squirting|losing blood",
        "lost .. lot of blood",
        "cut|cuts|cutting|stabbed .. too deep",
        "need stitches",
        "vomit*|throwing_up|coughing|coughing_up|puking|spitting|peeing|pooing .. blood",
    ]).unless(&["period|nosebleed|nose_bleed|paper_cut|gums|heart_is_bleeding"]),
    rule("MED-007", MedicalEmergency, Imminent, "Heart attack or stroke signs", &[
        "having|think|is_having|might_be_having|could_be|am_having [a] heart_attack|stroke",
        "crushing|severe|sharp|bad|terrible|really_bad|tight chest pain|pains",
        "chest .. hurts|pain|pains .. arm|jaw|sweating|breath|numb|left",
        "chest .. crushing|tight|tightness|pressure|heavy|squeezing .. arm|jaw|sweat*|breath|numb|left",
        "arm|jaw|left_side .. numb|gone_numb|tingling .. chest",
        "face .. drooping|droop*|numb|dropped",
        "can not lift|move|feel .. arm|leg|side|left_side|right_side",
        "slurred|slurring speech|words",
        "slurring|slurs .. words|speech|his_words|her_words",
        "can not|can_not|cannot speak|talk properly|clearly|right|straight",
        "arm|leg|face|side|hand .. limp|drooping|droopy|paralysed|paralyzed|dead_weight",
        "stroke symptoms|signs",
    ]).unless(&["panic_attack|anxiety_attack|last_year|years_ago|a_stroke_of|stroke_of_luck|stroke_the|stroking|heart_attack_risk|almost|nearly|when_i_saw|gave_me|give_me|giving_me"]),
    rule("MED-008", MedicalEmergency, Imminent, "A seizure now", &[
        "seizure|seizing|convulsing|convulsions|convulsion",
        "fitting right_now|now",
    ]).unless(&["medication_for|medicine_for|history_of|epilepsy_nurse|seizure_free|years_ago|last_year"]),
    rule("MED-009", MedicalEmergency, Imminent, "Alcohol mixed with sedatives or opioids", &[
        "took|taken|taking|swallowed|popped|mixed|had|took_my .. xanax|valium|diazepam|benzo*|lorazepam|ativan|klonopin|clonazepam|sleeping_pills|sleeping_tablets|oxy*|opioid*|fentanyl|heroin|codeine|tramadol|morphine|zopiclone|ambien|zolpidem|temazepam|gabapentin|pregabalin",
    ]).with(&["vodka", "alcohol", "drank", "drunk", "drinking", "wine", "beer", "whiskey", "whisky", "gin", "rum", "bottle", "booze", "tequila"]),
];

/// Markers that raise a live suicide, self-harm or harm-to-others hit to
/// `imminent`: a timeframe, means at hand, a plan, a farewell.
pub const IMMINENCE: &[Marker] = &[
    Marker { id: "IMM-001", description: "Timeframe: tonight, right now, today, this weekend", patterns: &[
        "tonight|tonite|today|tomorrow|right_now|this_weekend|this_evening|this_afternoon|in_an_hour|when_everyone_is_asleep|after_everyone_goes_to_bed|on_friday|on_saturday|on_sunday|on_monday|next_week|is_the_night|is_the_day",
    ]},
    Marker { id: "IMM-002", description: "Means at hand: pills, rope, gun, knife, blade ready", patterns: &[
        "have|got|bought|holding|ready|saved .. pills|tablets|rope|noose|gun|knife|blade|razor|the_means",
        "in my hand|bag|pocket",
        "@meds .. saved|stockpiled|ready|lined_up",
        "bought|got|buying rope|noose|gun|knife|a_gun|a_knife|a_rope",
    ]},
    Marker { id: "IMM-003", description: "A plan, a date, a farewell, or a decision", patterns: &[
        "made|have|got [a] plan",
        "picked|chosen|set [a|the] date|day",
        "know exactly|know_what_i_am_going_to_do",
        "going to do it|decided|i_mean_it|mean_it",
        "goodbye|last_message|said_my_goodbyes|wrote_a_note",
    ]},
];

/// Words that negate what follows them within [`NEGATION_WINDOW`] words.
pub const NEGATION_CUES: &[&str] = &["not", "never", "no", "nor", "neither"];

/// How many words before a match a negation cue reaches.
pub const NEGATION_WINDOW: usize = 5;

/// A negation cue followed by one of these is not negating the risk:
/// "can't stop thinking about killing myself", "not sure I want to live",
/// "I'm not okay and I want to die".
pub const PSEUDO_NEGATION_NEXT: &[&str] = &[
    "stop", "help", "sure", "certain", "know", "longer", "just", "only", "even", "one", "matter",
    "wait", "cope", "handle", "take", "bear", "stand", "seem", "escape", "shake", "control",
    "resist", "get", "okay", "ok", "fine", "good", "well", "alright", "happy", "great", "coping",
    "safe", "able", "sleeping", "eating", "afraid", "scared", "more", "point", "reason", "idea",
    "joke", "joking", "kidding", "lying", "exaggerating",
];

/// Words that end the reach of a negation cue backwards ("I'm not okay and
/// I want to die": the "not" does not reach past "and").
pub const NEGATION_STOPS: &[&str] = &["and", "so", "because", "then", "or", "if", "cause", "since", "when", "i"];

/// A clause reads as history with one of these ("when I was 16", "as a
/// teenager", "years ago", "used to")...
pub const HISTORICAL_MARKERS: &[&str] = &[
    "when i was", "as a teenager", "as a teen", "as a kid", "as a child", "in my teens",
    "in my twenties", "years ago", "year ago", "used to", "in the past", "back then",
    "growing up", "in high school", "a long time ago", "decades ago", "in my teens",
    "long ago", "as a young", "when we were", "in my childhood",
];

/// ...unless it also has one of these.
pub const CURRENT_MARKERS: &[&str] = &[
    "again", "now", "still", "lately", "recently", "tonight", "today", "yesterday", "this week",
    "last night", "currently", "relapse", "relapsed", "relapsing", "any more", "right now",
    "these days", "this morning", "last week", "keep", "keeps", "started", "every day",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::Pattern;
    use std::collections::HashSet;

    #[test]
    fn every_pattern_compiles_and_ids_are_unique() {
        let mut ids = HashSet::new();
        for r in RULES {
            assert!(ids.insert(r.id), "duplicate rule id {}", r.id);
            assert!(!r.description.is_empty() && !r.patterns.is_empty(), "{}", r.id);
            for p in r.patterns.iter().chain(r.unless).chain(r.with) {
                Pattern::compile(p, SETS);
            }
        }
        for m in IMMINENCE {
            assert!(ids.insert(m.id), "duplicate marker id {}", m.id);
            for p in m.patterns {
                Pattern::compile(p, SETS);
            }
        }
    }
}
